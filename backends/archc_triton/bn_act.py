"""BNAct: BatchNorm2d(+residual add)+activation in Triton kernels, a drop-in for the `bn_act` IR op.

The activation is any of archc_triton.act_kernels (the whole family of
archc.ir.activations' table, and "none"). The module keeps nn.BatchNorm2d's parameters
and buffers under the same names, shapes and dtypes, so a state_dict moves freely between
the torch and triton backends. The autograd graph keeps only the BN input x plus
per-channel statistics (and, with a residual, one more map): the backward recomputes
x_hat and the pre-activation z = gamma*x_hat + beta [+ r], and takes the activation's
derivative at z, instead of storing the normalised activation. With a residual, ReLU (and
no activation) keep the output y, which the next conv keeps anyway, and take z > 0 from
y > 0; every other activation's derivative needs z itself, so they keep the residual r
and recompute z from x and r. Inputs in a dtype
the kernels do not cover (float64) run the same autograd Function on bn_torch, the
kernels' torch twin, and are counted as such in `dispatch_counts()`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from archc.errors import BackendError
from archc_triton import bn_kernels, bn_torch
from archc_triton.act_kernels import KernelAct, kernel_act
from archc_triton.dispatch import KERNEL_DTYPES, Dispatch, interpreted_device_ok


def _rows(t: torch.Tensor) -> torch.Tensor:
    """The [N*H*W, C] view of a channels_last-contiguous NCHW tensor."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).view(n * h * w, c)


def _nchw(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[N*H*W, C] rows back to a channels_last NCHW tensor shaped like `like`."""
    n, c, h, w = like.shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def statistics(
    ops: Any,
    xr: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    batch_stats: bool,
    update: bool,
    factor: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, invstd) of the batch (updating the running statistics when `update`), or the running
    (mean, var) when not `batch_stats`; `ops` is bn_kernels or its torch twin bn_torch."""
    if not batch_stats:
        return running_mean, running_var
    rm, rv = (running_mean, running_var) if update else (None, None)
    return ops.batch_stats(xr, eps, rm, rv, factor)


def kernel_ops(x: torch.Tensor) -> tuple[Any, str | None]:
    """(bn_kernels, None) for the dtypes the kernels cover, else (bn_torch, the reason)."""
    if x.dtype in KERNEL_DTYPES:
        return bn_kernels, None
    return bn_torch, f"dtype {str(x.dtype).removeprefix('torch.')}"


class _BNActFunction(torch.autograd.Function):
    """act(bn(x) [+ r]) with a backward that recomputes what it needs from x (and r or y)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        batch_stats: bool,
        update: bool,
        factor: float,
        eps: float,
        ops: Any,
        act: KernelAct,
    ) -> torch.Tensor:
        xr = _rows(x)
        rr = None if residual is None else _rows(residual)
        mean, stat = statistics(ops, xr, running_mean, running_var, batch_stats, update, factor, eps)
        y = _nchw(ops.forward(xr, rr, mean, stat, weight, bias, eps, from_var=not batch_stats, act=act), x)
        # y stands in for z in the backward only where the derivative depends on z > 0 alone
        y_mask = residual is not None and act.output_gives_grad
        if any(ctx.needs_input_grad[:4]):
            if not batch_stats:
                # a later train step updates the buffers in place; keep this step's values
                mean, stat = mean.clone(), stat.clone()
            # With a residual and ReLU, keep the output instead of it: the mask is y > 0, and y
            # is kept anyway by what reads it next (the next conv), so nothing extra stays alive;
            # the residual (a projection shortcut's BN output) would be.
            ctx.save_for_backward(x, y if y_mask else residual, weight, bias, mean, stat)
        ctx.batch_stats = batch_stats
        ctx.eps = eps
        ctx.ops = ops
        ctx.act = act
        ctx.y_mask = y_mask
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, r_or_y, weight, bias, mean, stat = ctx.saved_tensors
        need_x, need_r, need_w, need_b = ctx.needs_input_grad[:4]
        dyr = _rows(dy.contiguous(memory_format=torch.channels_last))
        dx, dr, dw, db = ctx.ops.backward(
            _rows(x),
            None if r_or_y is None else _rows(r_or_y),
            dyr,
            mean,
            stat,
            weight,
            bias,
            ctx.eps,
            from_var=not ctx.batch_stats,
            batch_stats=ctx.batch_stats,
            need=(need_x, need_r, need_w or need_b),
            act=ctx.act,
            y_mask=ctx.y_mask,
        )
        return (
            None if dx is None else _nchw(dx, x),
            None if dr is None else _nchw(dr, x),
            dw.to(weight.dtype) if need_w else None,
            db.to(bias.dtype) if need_b else None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


class BNAct(nn.Module):
    """act(BatchNorm2d(x) [+ residual]) in Triton kernels, with nn.BatchNorm2d's parameters and buffers.

    Inputs may be NCHW or channels_last (NCHW inputs are converted once); the output is
    channels_last in the input's dtype. Parameters and statistics stay float32 and all
    arithmetic is float32, as nn.BatchNorm2d does for bfloat16 inputs.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance.
        momentum: the running statistics' update factor; None for a cumulative average.
        track_running_stats: keep running_mean/var/num_batches_tracked and use them in eval.
        residual: the forward takes a second tensor added before the activation.
        act: the activation, "none" or one of archc_triton.act_kernels.KERNEL_ACTS.
        negative_slope: leaky_relu's slope (as F.leaky_relu; only with act="leaky_relu").
        approximate: gelu's form, "none" or "tanh" (as F.gelu; only with act="gelu").
        device: where the parameters and buffers live.
        dtype: their dtype (float32 by default).

    Raises:
        ValueError: an activation the kernels do not apply, or a keyword it does not take.
    """

    _version = 2  # nn.BatchNorm2d's state_dict version: num_batches_tracked is saved

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        track_running_stats: bool = True,
        residual: bool = False,
        act: str = "relu",
        negative_slope: float = 0.01,
        approximate: str = "none",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.kernel_act = kernel_act(act, negative_slope, approximate)
        self.act = act
        kw = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = True
        self.track_running_stats = track_running_stats
        self.residual = residual
        self._dispatch = Dispatch()
        self.weight = nn.Parameter(torch.empty(num_features, **kw))
        self.bias = nn.Parameter(torch.empty(num_features, **kw))
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **kw))
            self.register_buffer("running_var", torch.ones(num_features, **kw))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, device=device),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Mean 0, variance 1, no batches tracked (as nn.BatchNorm2d)."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Weight 1, bias 0 and fresh running statistics (as nn.BatchNorm2d)."""
        self.reset_running_stats()
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        text = (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine=True, "
            f"track_running_stats={self.track_running_stats}, residual={self.residual}"
        )
        if self.act == "relu":
            return text
        return text + "".join(f", {k}={v!r}" for k, v in {"act": self.act, **self.kernel_act.keywords()}.items())

    def dispatch_counts(self) -> dict[str, int]:
        """Calls so far: {"kernel": n}, and {"dtype float64": n} for inputs the kernels do not cover
        (computed by bn_torch); a device the kernels cannot serve is an error, not a fallback."""
        return dict(self._dispatch.counts)

    def record_call(self, reason: str | None) -> None:
        """Count one call in `dispatch_counts()`: the kernels (reason None) or the torch twin's reason."""
        self._dispatch.record(reason)

    def _check_device(self, x: torch.Tensor, residual: torch.Tensor | None) -> None:
        """Refuse, with a BackendError, a device the kernels cannot run on, or tensors on two devices."""
        if not interpreted_device_ok(x, bn_kernels.interpreting()):
            where = "a CPU tensor" if x.device.type == "cpu" else f"a tensor on '{x.device}'"
            raise BackendError(
                f"BNAct runs Triton kernels, which need a CUDA GPU tensor; got {where}",
                hint="move the model and its inputs to a GPU, use --backend torch, or set "
                "TRITON_INTERPRET=1 to run the kernels in Triton's (slow) CPU interpreter on CPU tensors",
            )
        others = [t for t in (residual, self.weight) if t is not None and t.device != x.device]
        if others:
            raise BackendError(
                f"BNAct got its input on '{x.device}' but its parameters or residual on '{others[0].device}'",
                hint="move the model and its inputs to the same device (model.to(device))",
            )

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        # as nn.BatchNorm2d: checkpoints from before num_batches_tracked existed still load
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long, device=self.num_batches_tracked.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """act(bn(x) [+ residual]).

        Args:
            x: an N x C x H x W tensor on a CUDA device (or on the CPU under TRITON_INTERPRET=1).
            residual: a tensor of x's shape, given exactly when the module has residual=True.

        Returns:
            A channels_last tensor of x's shape and dtype.

        Raises:
            BackendError: x is on a device the kernels cannot run on (a CPU tensor with
                Triton's interpreter off, or anything but CUDA and CPU), or x, the residual
                and the parameters are not all on one device.
            ValueError: a wrong shape, a missing or unexpected residual, or a single value
                per channel in training (as nn.BatchNorm2d).
        """
        prepared = self.prepare(x, residual)
        if prepared is None:  # nothing to normalise; the statistics stay as they are
            return torch.empty_like(x, memory_format=torch.channels_last)
        x, residual, batch_stats, update, factor = prepared
        ops, reason = kernel_ops(x)
        self.record_call(reason)
        return _BNActFunction.apply(
            x,
            residual,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            batch_stats,
            update,
            factor,
            self.eps,
            ops,
            self.kernel_act,
        )

    def prepare(
        self, x: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, bool, bool, float] | None:
        """Check one call's inputs and count the batch: what a forward needs, or None for an empty x.

        Shared with the BN-act-conv unit (archc_triton.bn_act_conv), which normalises with
        this module's parameters, statistics and activation.

        Returns:
            (x and the residual as channels_last, batch_stats, update, factor): normalise with
            the batch's statistics (else the running ones), update the running ones with
            momentum `factor`.

        Raises:
            BackendError, ValueError: as forward.
        """
        self._check_device(x, residual)
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BNAct({self.num_features}) expected an N x {self.num_features} x H x W input, "
                f"got shape {tuple(x.shape)}"
            )
        if (residual is not None) != self.residual:
            given = "with" if residual is not None else "without"
            raise ValueError(f"BNAct has residual={self.residual} but was called {given} one")
        if residual is not None and residual.shape != x.shape:
            raise ValueError(f"BNAct residual shape {tuple(residual.shape)} does not match x {tuple(x.shape)}")
        n, c, h, w = x.shape
        batch_stats = self.training or not self.track_running_stats
        if batch_stats and n * h * w == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
        if x.numel() == 0:
            return None
        update = self.training and self.track_running_stats
        factor = 0.0
        if update:
            self.num_batches_tracked.add_(1)
            # momentum=None is a cumulative average; 1/num_batches_tracked needs a host read
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        x = x.contiguous(memory_format=torch.channels_last)
        if residual is not None:
            residual = residual.to(x.dtype).contiguous(memory_format=torch.channels_last)
        return x, residual, batch_stats, update, factor
