"""The kernel phase of gpu_check.py: every Triton-backed op of archc_triton against float64 torch.

Each check draws fresh random inputs, poisons the memory the op will allocate its output
from (NaN in the caching allocator's blocks, so an element the kernel never writes shows
as NaN), runs the op and compares it with the same function computed by torch in float64
on upcast inputs, as ||out - ref|| / ||ref|| per output. Tolerances: float32 1e-4 where the
arithmetic is plain float32 (BN), 3e-3 where a conv may run in TF32 (cuDNN's default and
the GEMM's, following it); bfloat16 2e-2 (8-bit mantissa storage). NaN never passes.

Cases: odd shapes (no dimension a multiple of a block size) and ResNet-50-sized ones
(56x56x64/256 and 7x7x512/2048 maps at batch 32), all with ReLU; then one row per other
activation of the kernels (archc_triton.act_kernels: the table's family, gelu in both forms,
leaky_relu at a non-default slope) that runs the four ops at the odd float32 shapes, each
against the activation's torch form in float64. `smoke` keeps only the smallest, and one
activation row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TOL = {"float32": 1e-4, "float32_conv": 3e-3, "bfloat16": 2e-2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# FusedConv: (label, cin, cout, kernel, stride, padding, groups, batch, H=W)
CONVS = [
    ("1x1 odd", 37, 45, 1, 1, 0, 1, 3, 13),
    ("1x1/2 odd", 37, 45, 1, 2, 0, 1, 3, 13),
    ("3x3 odd", 19, 33, 3, 1, 1, 1, 3, 11),
    ("7x7/2 odd", 3, 21, 7, 2, 3, 1, 2, 23),
    ("3x3 grouped odd", 18, 27, 3, 1, 1, 3, 2, 9),
    ("1x1 rn50 layer1", 64, 256, 1, 1, 0, 1, 32, 56),
    ("1x1/2 rn50 layer4 proj", 1024, 2048, 1, 2, 0, 1, 32, 14),
    ("3x3 rn50 layer4", 512, 512, 3, 1, 1, 1, 32, 7),
]
# BN-act: (label, batch, C, H=W)
BNS = [("odd", 3, 37, 13), ("rn50 layer1", 32, 256, 56), ("rn50 layer4", 32, 2048, 7)]
# activation rows: (name, torch keywords); ReLU is every case above
ACTS = [
    ("none", {}), ("relu6", {}), ("sigmoid", {}), ("hardsigmoid", {}), ("silu", {}), ("hardswish", {}),
    ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("tanh", {}), ("leaky_relu", {"negative_slope": 0.2}),
]  # fmt: skip
RELU: tuple[str, dict[str, Any]] = ("relu", {})


def _torch_act(act: tuple[str, dict[str, Any]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation's torch form (the table's), for the float64 references."""
    from archc_triton.act_kernels import kernel_act

    return kernel_act(act[0], **act[1]).torch


def rel_err(got: torch.Tensor | None, want: torch.Tensor | None) -> float:
    """||got - want|| / ||want|| in float64; inf when got is missing or holds NaN."""
    if got is None or want is None:
        return math.inf if (got is None) != (want is None) else 0.0
    g, w = got.detach().double(), want.detach().double()
    if not torch.isfinite(g).all():
        return math.inf
    return ((g - w).norm() / w.norm().clamp_min(1e-30)).item()


def poison(device: torch.device, nbytes: int) -> None:
    """Leave NaN in the caching allocator's free blocks, where the next outputs will be allocated."""
    if device.type == "cuda":
        torch.full((nbytes // 4 + 1,), float("nan"), device=device)


def _verdict(errs: dict[str, float], tol: float) -> dict[str, Any]:
    worst = max(errs.values())
    return {"errors": errs, "tol": tol, "status": "pass" if worst <= tol else "fail"}


def fused_conv(
    case: tuple, dtype_name: str, autocast: bool, device: torch.device, act: tuple[str, dict[str, Any]] = RELU
) -> dict[str, Any]:
    """FusedConv (eval op): act(conv(x) + b + r) against float64, with its dispatch counts."""
    from archc_triton.conv import FusedConv

    _, cin, cout, k, s, p, g, n, hw = case
    dtype = DTYPES[dtype_name]
    m = FusedConv(cin, cout, k, stride=s, padding=p, groups=g, act=act[0], residual=True, **act[1]).to(device)
    with torch.no_grad():
        m.bias.normal_()
    if not autocast:
        m = m.to(dtype)
    x = torch.randn(n, cin, hw, hw, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    oh = (hw + 2 * p - k) // s + 1
    r = torch.randn(n, cout, oh, oh, device=device).to(dtype)
    poison(device, 2 * r.numel() * r.element_size())
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=autocast):
        y = m(x, r)
    w = m.weight.double() if not autocast else m.weight.to(dtype).double()  # autocast rounds W to dtype
    want = _torch_act(act)(F.conv2d(x.double(), w, m.bias.double(), s, p, 1, g) + r.double())
    out = _verdict({"y": rel_err(y, want)}, TOL["float32_conv" if dtype_name == "float32" else dtype_name])
    out["dispatch"] = m.dispatch_counts()
    if m.dispatch_counts() != {"kernel": 1}:
        out["status"] = "fail"
    return out


def _bn_pair(
    c: int, residual: bool, device: torch.device, seed: int, act: tuple[str, dict[str, Any]] = RELU
) -> tuple[Any, nn.BatchNorm2d]:
    """A BNAct and a float64 nn.BatchNorm2d with the same random affine parameters and statistics."""
    from archc_triton.bn_act import BNAct

    gen = torch.Generator().manual_seed(seed)
    ref = nn.BatchNorm2d(c).double()
    with torch.no_grad():
        ref.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        ref.bias.copy_(torch.rand(c, generator=gen) - 0.5)
        ref.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
        ref.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    m = BNAct(c, residual=residual, act=act[0], **act[1])
    m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ref.state_dict().items()})
    return m.to(device), ref.to(device)


def _grads(y: torch.Tensor, dy: torch.Tensor, tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    y.backward(dy)
    return [None if t is None else t.grad for t in tensors]


def bn_act(
    case: tuple,
    dtype_name: str,
    residual: bool,
    train: bool,
    device: torch.device,
    act: tuple[str, dict[str, Any]] = RELU,
) -> dict[str, Any]:
    """BNAct forward, backward and running statistics against float64 BatchNorm2d + add + activation."""
    _, n, c, hw = case
    dtype = DTYPES[dtype_name]
    m, ref = _bn_pair(c, residual, device, seed=n * c, act=act)
    m.train(train)
    ref.train(train)
    x = (torch.randn(n, c, hw, hw, device=device) * 2 + 0.5).to(dtype).contiguous(memory_format=torch.channels_last)
    r = torch.randn_like(x) if residual else None
    dy = torch.randn_like(x)
    xs = [x.clone().requires_grad_(), None if r is None else r.clone().requires_grad_()]
    xd = [x.double().requires_grad_(), None if r is None else r.double().requires_grad_()]
    poison(device, 4 * x.numel() * x.element_size())
    y = m(xs[0], xs[1])
    got = [y, *_grads(y, dy, [*xs, m.weight, m.bias])]
    z = ref(xd[0])
    want_y = _torch_act(act)(z if r is None else z + xd[1])
    want = [want_y, *_grads(want_y, dy.double(), [*xd, ref.weight, ref.bias])]
    names = ["y", "dx", "dr", "dgamma", "dbeta"]
    errs = {k: rel_err(a, b) for k, a, b in zip(names, got, want, strict=True) if b is not None}
    if train:
        errs["running_mean"] = rel_err(m.running_mean, ref.running_mean)
        errs["running_var"] = rel_err(m.running_var, ref.running_var)
    out = _verdict(errs, TOL[dtype_name])
    out["dispatch"] = m.dispatch_counts()
    return out


def unit(case: tuple, dtype_name: str, device: torch.device, act: tuple[str, dict[str, Any]] = RELU) -> dict[str, Any]:
    """bn_act_conv_unit (train) against float64 BatchNorm2d -> activation -> Conv2d: values, every gradient."""
    from archc_triton.bn_act_conv import bn_act_conv_unit

    _, n, c, hw = case
    dtype = DTYPES[dtype_name]
    m, ref = _bn_pair(c, False, device, seed=n + c, act=act)
    conv = nn.Conv2d(c, c // 2 + 1, 3, padding=1, bias=False).to(device).to(memory_format=torch.channels_last)
    conv64 = nn.Conv2d(c, c // 2 + 1, 3, padding=1, bias=False).to(device).double()
    conv64.load_state_dict(conv.state_dict())
    x = (torch.randn(n, c, hw, hw, device=device) * 2 + 0.5).to(dtype).contiguous(memory_format=torch.channels_last)
    xs, xd = x.clone().requires_grad_(), x.double().requires_grad_()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        y = bn_act_conv_unit(xs, m, conv)
    dy = torch.randn_like(y)
    got = [y, *_grads(y, dy, [xs, m.weight, m.bias, conv.weight])]
    want_y = conv64(_torch_act(act)(ref(xd)))
    want = [want_y, *_grads(want_y, dy.double(), [xd, ref.weight, ref.bias, conv64.weight])]
    names = ["y", "dx", "dgamma", "dbeta", "dW"]
    errs = {k: rel_err(a, b) for k, a, b in zip(names, got, want, strict=True)}
    errs["running_mean"] = rel_err(m.running_mean, ref.running_mean)
    out = _verdict(errs, TOL["float32_conv" if dtype_name == "float32" else dtype_name])
    out["dispatch"] = m.dispatch_counts()
    return out


def activation(act: tuple[str, dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """One activation through all four ops at the odd float32 shapes: the 1x1 GEMM's and the
    epilogue kernel's FusedConv, BNAct (train, residual) and the unit; errors prefixed by op."""
    parts = {
        "gemm": fused_conv(CONVS[0], "float32", False, device, act),
        "epilogue": fused_conv(CONVS[2], "float32", False, device, act),
        "bn_act": bn_act(BNS[0], "float32", True, True, device, act),
        "unit": unit(BNS[0], "float32", device, act),
    }
    errs = {f"{op} {k}": v for op, part in parts.items() for k, v in part["errors"].items()}
    out = {"errors": errs, "status": "pass" if all(p["status"] == "pass" for p in parts.values()) else "fail"}
    out["tol"] = {op: part["tol"] for op, part in parts.items()}
    out["dispatch"] = {op: part["dispatch"] for op, part in parts.items()}
    return out


def _act_label(act: tuple[str, dict[str, Any]]) -> str:
    return " ".join([act[0], *(f"{k}={v}" for k, v in act[1].items())])


def checks(smoke: bool, device: torch.device) -> Iterator[tuple[str, float, Callable[[], dict[str, Any]]]]:
    """(name, estimated seconds on a GPU, check) for every kernel check, cheapest first.

    `smoke` (the CI dry run in Triton's interpreter) keeps one case of each kind and path.
    """
    if smoke:
        conv1, conv3 = CONVS[1], CONVS[2]
        yield f"fused_conv {conv1[0]} float32", 1.0, lambda: fused_conv(conv1, "float32", False, device)
        yield f"fused_conv {conv3[0]} bf16 autocast", 1.0, lambda: fused_conv(conv3, "bfloat16", True, device)
        yield "bn_act odd float32 residual train", 1.0, lambda: bn_act(BNS[0], "float32", True, True, device)
        yield "bn_act odd bfloat16 plain eval", 1.0, lambda: bn_act(BNS[0], "bfloat16", False, False, device)
        for dt in DTYPES:
            yield f"bn_act_conv_unit odd {dt}", 1.0, lambda d=dt: unit(BNS[0], d, device)
        yield "act hardswish odd float32", 2.0, lambda: activation(("hardswish", {}), device)
        return
    for case in CONVS:
        for dt in DTYPES:
            yield f"fused_conv {case[0]} {dt}", 5.0, lambda c=case, d=dt: fused_conv(c, d, False, device)
        yield f"fused_conv {case[0]} bf16 autocast", 3.0, lambda c=case: fused_conv(c, "bfloat16", True, device)
    for case in BNS:
        for dt in DTYPES:
            for residual in (False, True):
                for train in (True, False):
                    name = f"bn_act {case[0]} {dt} {'residual' if residual else 'plain'} {'train' if train else 'eval'}"
                    yield name, 6.0, lambda c=case, d=dt, r=residual, t=train: bn_act(c, d, r, t, device)
            yield f"bn_act_conv_unit {case[0]} {dt}", 4.0, lambda c=case, d=dt: unit(c, d, device)
    for act in ACTS:  # each compiles its own kernel variants (a constexpr ACT per kernel): ~2 s
        yield f"act {_act_label(act)} odd float32", 2.0, lambda a=act: activation(a, device)
