"""FusedConv: the eval-mode `fused_conv` op, y = act(conv(x, W) + b [+ r]), with Triton kernels.

BN is folded into W and b when weights are loaded (archc.weights.fold_state_dict), so at
run time a fused_conv is a biased conv followed by an optional residual add and an
activation, any of archc_triton.act_kernels (the family of archc.ir.activations' table).
Activations are channels_last throughout: an NCHW input is converted once on entry, and
the output is channels_last.

Two paths:

* 1x1 convs (no padding, groups 1, any stride) are one Triton GEMM over the channels_last
  activations, [N*OH*OW, Cin] @ [Cin, Cout], with bias, residual and activation applied to the
  fp32 accumulator before the single store. A strided 1x1 conv (the projection shortcut)
  reads the subsampled pixels through strides inside the kernel, so nothing is copied.
* every other conv (3x3, 7x7, grouped, dilated) runs as cuDNN/ATen F.conv2d without bias,
  followed by ONE Triton epilogue kernel that adds the bias and the residual and applies
  the activation in place over the channels_last output.

For 3x3 convs the design question was implicit GEMM in Triton against cuDNN plus the
epilogue, to be decided by measurement on a GPU. That measurement has not been made yet:
this code was written and tested on a machine without a GPU (the kernels ran in Triton's
CPU interpreter, which says nothing about speed). cuDNN + epilogue is the default because
cuDNN's 3x3 kernels (Winograd, implicit GEMM with tuned tiles per architecture) are strong
and hard to beat from Triton, while the epilogue already removes what the plain torch
lowering pays beyond the conv: the separate bias, add and activation passes over the output.
The GEMM and epilogue block sizes below are likewise reasonable defaults, not tuned.

Autograd: the Triton paths are inference-only. When autograd would record the call
(grad mode on and x, the residual or a parameter requires grad), forward runs the plain
torch expression F.conv2d(x, W, b) (+ r) (-> act) instead, so training through a
FusedConv is correct, only not fused. Use torch.inference_mode() or torch.no_grad() to
get the kernels. The torch expression is also used for inputs the kernels do not cover
(dtypes other than float32/bfloat16/float16, unbatched 3D input, CPU tensors outside the
interpreter, input dtype or device differing from the weights'), which then also
raises torch's own errors for mismatches.

Mixed precision: under torch.autocast the kernels compute in autocast's dtype, as
F.conv2d would: the input is cast to it and the weight comes from a cached copy in that
dtype, refreshed when the parameter changes (archc_triton.dispatch). The bias stays in its
own dtype; the epilogue reads it into the float32 accumulator. Each call is counted
(`dispatch_counts()`: "kernel" or the fallback's reason), so a benchmark can show that
no call took the fallback.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
import triton
from torch import nn

from archc_triton import conv_kernels as K
from archc_triton.act_kernels import KERNEL_ACTS, KernelAct, kernel_act
from archc_triton.dispatch import KERNEL_DTYPES, CastCache, Dispatch, compute_dtype, tf32_enabled

ACTS = KERNEL_ACTS


def _pow2_clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, 1 << max(0, n - 1).bit_length()))


def gemm_config(m: int, n: int, k: int, dtype: torch.dtype) -> dict[str, int]:
    """Tile sizes and launch options of the 1x1-conv GEMM (untuned defaults).

    tl.dot needs every tile dimension >= 16. Narrow layers get narrow N tiles instead of
    masking most of a 128-wide tile; 16-bit inputs take deeper K steps (same bytes per step).

    Args:
        m: output pixels N*OH*OW.
        n: output channels.
        k: input channels.
        dtype: the activation dtype.

    Returns:
        BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps and num_stages.
    """
    block_m = _pow2_clamp(m, 16, 128 if m >= 4096 else 64)
    block_n = _pow2_clamp(n, 16, 128)
    block_k = _pow2_clamp(k, 16, 32 if dtype == torch.float32 else 64)
    warps = 8 if block_m * block_n >= 128 * 128 else 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, num_warps=warps, num_stages=3)


def epilogue_config(m: int, c: int) -> dict[str, int]:
    """Tile sizes of the in-place bias/residual/activation kernel: ~4096 elements per program.

    Args:
        m: output pixels N*OH*OW.
        c: output channels.

    Returns:
        BLOCK_M, BLOCK_C and num_warps.
    """
    block_c = _pow2_clamp(c, 16, 128)
    return dict(BLOCK_M=max(1, 4096 // block_c), BLOCK_C=block_c, num_warps=4)


def _on_device(t: torch.Tensor) -> Any:
    # Triton launches on torch's current CUDA device; make it the tensor's
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _input_precision(dtype: torch.dtype) -> str:
    # match what F.conv2d does with fp32 on the same machine: TF32 when cuDNN may use it
    if dtype == torch.float32 and not K.INTERPRETED and torch.version.hip is None:
        return "tf32" if tf32_enabled() else "ieee"
    return "ieee"


def conv1x1(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    stride: tuple[int, int],
    residual: torch.Tensor | None,
    act: KernelAct,
) -> torch.Tensor:
    """act(conv1x1(x, weight, stride) + bias [+ residual]) as one Triton GEMM.

    Args:
        x: [N, Cin, H, W] activations (any strides; channels_last reads coalesced).
        weight: [Cout, Cin, 1, 1].
        bias: [Cout].
        stride: the conv stride; the kernel reads every stride-th pixel in place.
        residual: None, or a tensor of the output's shape (made channels_last if it is not).
        act: the activation applied last (archc_triton.act_kernels.kernel_act).

    Returns:
        The [N, Cout, OH, OW] output, channels_last, in x's dtype.
    """
    n, cin, h, w = x.shape
    cout = weight.shape[0]
    sh, sw = stride
    oh, ow = (h - 1) // sh + 1, (w - 1) // sw + 1
    y = torch.empty((n, oh, ow, cout), dtype=x.dtype, device=x.device).permute(0, 3, 1, 2)
    r = _residual(residual, y)
    m = n * oh * ow
    if m == 0 or cout == 0:
        return y
    cfg = gemm_config(m, cout, cin, x.dtype)
    grid = (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(cout, cfg["BLOCK_N"]),)
    with _on_device(x):
        K.conv1x1_gemm_kernel[grid](
            x,
            weight,
            bias,
            y if r is None else r,  # never read without HAS_RES; any valid pointer will do
            y,
            m,
            cout,
            cin,
            oh * ow,
            ow,
            x.stride(0),
            x.stride(2) * sh,
            x.stride(3) * sw,
            x.stride(1),
            weight.stride(0),
            weight.stride(1),
            act.slope,
            HAS_RES=r is not None,
            ACT=act.code,
            UPCAST=K.INTERPRETED,
            INPUT_PRECISION=_input_precision(x.dtype),
            **cfg,
        )
    return y


def bias_act_(y: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None, act: KernelAct) -> torch.Tensor:
    """In place: y = act(y + bias [+ residual]) with one Triton kernel.

    Args:
        y: a channels_last-contiguous [N, C, H, W] tensor (the conv output; overwritten).
        bias: [C].
        residual: None, or a tensor of y's shape (made channels_last if it is not).
        act: the activation applied last.

    Returns:
        y.
    """
    if not y.is_contiguous(memory_format=torch.channels_last):
        raise ValueError("bias_act_ needs a channels_last-contiguous output")
    r = _residual(residual, y)
    c = y.shape[1]
    m = y.numel() // c if c else 0
    if m == 0:
        return y
    cfg = epilogue_config(m, c)
    grid = (triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(c, cfg["BLOCK_C"]))
    with _on_device(y):
        K.bias_act_kernel[grid](
            y, bias, y if r is None else r, m, c, act.slope, HAS_RES=r is not None, ACT=act.code, **cfg
        )
    return y


def _residual(residual: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor | None:
    if residual is None:
        return None
    if residual.shape != y.shape:
        raise ValueError(f"residual of shape {tuple(residual.shape)} does not match the output {tuple(y.shape)}")
    if residual.device != y.device:
        raise ValueError(f"residual is on {residual.device}, the output on {y.device}")
    # the kernels index the residual exactly like the dense channels_last output
    return residual.contiguous(memory_format=torch.channels_last)


class FusedConv(nn.Conv2d):
    """A Conv2d with bias whose forward also adds a residual and applies an activation, fused in Triton.

    Parameters and state_dict keys are exactly nn.Conv2d(..., bias=True)'s (`weight`,
    `bias`), so checkpoints with BN folded in by archc.weights load unchanged.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or (kh, kw).
        stride: int or pair.
        padding: int or pair (zero padding).
        dilation: int or pair.
        groups: channel groups.
        act: "none" or one of archc_triton.act_kernels.KERNEL_ACTS, applied last.
        residual: whether forward takes (and requires) a residual to add before the activation.
        negative_slope: leaky_relu's slope (as F.leaky_relu; only with act="leaky_relu").
        approximate: gelu's form, "none" or "tanh" (as F.gelu; only with act="gelu").
        device: where to create the parameters.
        dtype: the parameters' dtype.

    Raises:
        ValueError: an unknown `act`, or a keyword it does not take.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        act: str = "none",
        residual: bool = False,
        negative_slope: float = 0.01,
        approximate: str = "none",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if act not in ACTS:
            raise ValueError(f"FusedConv act must be one of {', '.join(ACTS)}, got {act!r}")
        kernel = kernel_act(act, negative_slope, approximate)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=True,
            device=device,
            dtype=dtype,
        )
        self.act = act
        self.kernel_act = kernel
        self.residual = residual
        self._dispatch = Dispatch()
        self._weight_cast = CastCache()

    def extra_repr(self) -> str:
        """nn.Conv2d's description plus the activation and whether a residual is added."""
        keywords = "".join(f", {k}={v!r}" for k, v in self.kernel_act.keywords().items())
        return f"{super().extra_repr()}, act={self.act!r}{keywords}, residual={self.residual}"

    @property
    def is_gemm(self) -> bool:
        """True when the conv is 1x1 without padding or groups, so it runs as one Triton GEMM."""
        return self.kernel_size == (1, 1) and self.padding == (0, 0) and self.groups == 1

    def dispatch_counts(self) -> dict[str, int]:
        """Calls so far: {"kernel": n} and {fallback reason: n} (see fallback_reason)."""
        return dict(self._dispatch.counts)

    def fallback_reason(self, x: torch.Tensor, residual: torch.Tensor | None) -> str | None:
        """Why this call must take the torch expression, or None when the kernels run it.

        Args:
            x: the input as given to forward.
            residual: the residual as given to forward.

        Returns:
            None, or a short reason: "autograd", "not 4D", "dtype <d>", "dtype mismatch",
            "device mismatch", "device <type>".
        """
        if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, residual, self.weight, self.bias)
        ):
            return "autograd"  # autograd must see the ops: the kernels have no backward
        if x.dim() != 4:
            return "not 4D"
        dtype = compute_dtype(x)
        if dtype not in KERNEL_DTYPES:
            return f"dtype {str(dtype).removeprefix('torch.')}"
        if dtype != self.weight.dtype and not torch.is_autocast_enabled(x.device.type):
            return "dtype mismatch"  # torch's own error for it comes from the fallback
        if x.device != self.weight.device:
            return "device mismatch"
        if self.bias is None:
            return "no bias"
        if not (x.is_cuda or K.INTERPRETED):
            return f"device {x.device.type}"
        return None

    def torch_forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The reference expression, differentiable: act(F.conv2d(x, W, b) [+ residual]).

        Args:
            x: [N, Cin, H, W] (or unbatched [Cin, H, W]) input.
            residual: None, or a tensor to add before the activation.

        Returns:
            The output; channels_last for 4D input.
        """
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        return self.kernel_act.torch(y)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """act(conv(x, W) + b [+ residual]), with the Triton kernels when autograd is not recording.

        Args:
            x: [N, Cin, H, W] input, NCHW or channels_last (converted once to channels_last).
            residual: the tensor to add before the activation; required exactly when the
                module was built with residual=True; must have the output's shape.

        Returns:
            [N, Cout, OH, OW] output in channels_last memory format, in x's dtype (autocast's
            dtype under autocast).

        Raises:
            ValueError: residual given without residual=True or missing with it, or of the wrong shape.
        """
        if (residual is not None) != self.residual:
            raise ValueError(
                f"FusedConv built with residual={self.residual} was called "
                f"{'with' if residual is not None else 'without'} a residual"
            )
        if not self._dispatch.record(self.fallback_reason(x, residual)):
            return self.torch_forward(x, residual)
        dtype = compute_dtype(x)  # autocast's dtype under autocast, else x's (== the weight's)
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)
        weight = self._weight_cast.get(self.weight, dtype)
        if self.is_gemm:
            return conv1x1(x, weight, self.bias, self.stride, residual, self.kernel_act)
        with torch.autocast(x.device.type, enabled=False):  # the inputs are already in `dtype`
            y = F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)
        # F.conv2d keeps channels_last for a channels_last input; be sure before writing in place
        y = y.contiguous(memory_format=torch.channels_last)
        return bias_act_(y, self.bias, residual, self.kernel_act)
