"""The activation family in Triton: one `act(z)` and one `act_grad(z, dy)` for every kernel.

Both the BN kernels (archc_triton.bn_kernels) and the conv epilogue kernels
(archc_triton.conv_kernels) apply their activation through these two jit helpers, selected
by a constexpr code (so each kernel compiles only its own branch), with `slope` a runtime
argument (leaky_relu's negative slope; ignored by the others). The codes are the package's
`archc_triton.ACT_CODES` (there so the lowering reads the list without importing triton).
`KernelAct` is the Python side: an activation of archc.ir.activations' table (name and torch
keywords) with its code, and its torch form for references and the float64 twin
(archc_triton.bn_torch).

`act_grad` takes the pre-activation z, recomputed from the BN input, never the output, so a
backward keeps nothing but x (and the residual). The derivatives, with torch's autograd
conventions at the break points (checked against torch: tests/backends/test_triton_bn_act.py
puts inputs exactly on them):

    relu         1 if z > 0 else 0                        (0 at z = 0)
    relu6        1 if 0 < z < 6 else 0                    (0 at 0 and at 6)
    sigmoid      s (1 - s), s = sigmoid(z)
    hardsigmoid  1/6 if -3 < z < 3 else 0                 (0 at -3 and at 3)
    silu         d/dz z s = s + z s (1 - s) = s (1 + z (1 - s))
    hardswish    0 if z <= -3; z/3 + 1/2 if z < 3; else 1 (0 at -3, 1 at 3)
                 (d/dz z (z + 3) / 6 = (2z + 3) / 6 = z/3 + 1/2)
    gelu         Phi(z) + z phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2, phi(z) = exp(-z^2/2) / sqrt(2 pi)
    gelu tanh    with u = c (z + k z^3), c = sqrt(2/pi), k = 0.044715, t = tanh(u):
                 y = z/2 (1 + t);  y' = (1 + t)/2 + z/2 (1 - t^2) c (1 + 3 k z^2)
    tanh         1 - t^2, t = tanh(z)
    leaky_relu   1 if z > 0 else slope                    (slope at z = 0)

The helpers call only Triton builtins (tl.exp, tl.erf, tl.abs, tl.where, tl.maximum, tl.minimum),
not library jit functions such as tl.sigmoid: see archc_triton.conv_kernels on why.
Triton 3.x has no tanh builtin outside the CUDA libdevice, so tanh is
sign(z) (1 - e) / (1 + e) with e = exp(-2|z|), within float32 rounding of torch.tanh in
absolute terms; sigmoid likewise goes through exp(-|z|), so neither overflows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import triton
import triton.language as tl

from archc.ir.activations import ACTIVATIONS, activation_fn
from archc.ir.registry import OpProblem
from archc_triton import ACT_CODES, GELU_TANH_CODE, KERNEL_ACTS

__all__ = ["KERNEL_ACTS", "RELU_ACT", "KernelAct", "act", "act_grad", "kernel_act"]

# the constexpr codes (instances of tl.constexpr: the only globals a jit function may read),
# from the package's ACT_CODES, the one map from names to codes
NONE = tl.constexpr(ACT_CODES["none"])
RELU = tl.constexpr(ACT_CODES["relu"])
RELU6 = tl.constexpr(ACT_CODES["relu6"])
SIGMOID = tl.constexpr(ACT_CODES["sigmoid"])
HARDSIGMOID = tl.constexpr(ACT_CODES["hardsigmoid"])
SILU = tl.constexpr(ACT_CODES["silu"])
HARDSWISH = tl.constexpr(ACT_CODES["hardswish"])
GELU = tl.constexpr(ACT_CODES["gelu"])
GELU_TANH = tl.constexpr(GELU_TANH_CODE)
TANH = tl.constexpr(ACT_CODES["tanh"])
LEAKY_RELU = tl.constexpr(ACT_CODES["leaky_relu"])
# gelu's constants are literals in the helpers (a constexpr times a tensor is a constexpr in the
# interpreter): 0.7071067811865476 = 1/sqrt(2), 0.3989422804014327 = 1/sqrt(2 pi),
# 0.7978845608028654 = sqrt(2/pi), 0.044715 = k


@triton.jit
def _sigmoid(z):
    # from e = exp(-|z|) <= 1, which never overflows
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _tanh(z):
    # sign(z) (1 - e) / (1 + e) with e = exp(-2|z|) <= 1, which never overflows
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z >= 0.0, t, -t)


@triton.jit
def act(z, slope, ACT: tl.constexpr):
    """The activation ACT of the float32 tile z (slope: leaky_relu's negative slope)."""
    if ACT == RELU:
        y = tl.maximum(z, 0.0)
    elif ACT == RELU6:
        y = tl.minimum(tl.maximum(z, 0.0), 6.0)
    elif ACT == SIGMOID:
        y = _sigmoid(z)
    elif ACT == HARDSIGMOID:
        y = tl.minimum(tl.maximum(z + 3.0, 0.0), 6.0) / 6.0
    elif ACT == SILU:
        y = z * _sigmoid(z)
    elif ACT == HARDSWISH:
        y = z * tl.minimum(tl.maximum(z + 3.0, 0.0), 6.0) / 6.0
    elif ACT == GELU:
        y = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif ACT == GELU_TANH:
        y = 0.5 * z * (1.0 + _tanh((z + 0.044715 * z * z * z) * 0.7978845608028654))
    elif ACT == TANH:
        y = _tanh(z)
    elif ACT == LEAKY_RELU:
        y = tl.where(z > 0.0, z, z * slope)
    else:
        y = z
    return y


@triton.jit
def act_grad(z, dy, slope, ACT: tl.constexpr):
    """dL/dz = dy * act'(z) from the pre-activation z (the derivatives: the module docstring)."""
    if ACT == RELU:
        dz = tl.where(z > 0.0, dy, 0.0)
    elif ACT == RELU6:
        dz = tl.where((z > 0.0) & (z < 6.0), dy, 0.0)
    elif ACT == SIGMOID:
        s = _sigmoid(z)
        dz = dy * s * (1.0 - s)
    elif ACT == HARDSIGMOID:
        dz = tl.where((z > -3.0) & (z < 3.0), dy * (1.0 / 6.0), 0.0)
    elif ACT == SILU:
        s = _sigmoid(z)
        dz = dy * s * (1.0 + z * (1.0 - s))
    elif ACT == HARDSWISH:
        dz = tl.where(z <= -3.0, 0.0, tl.where(z < 3.0, dy * (z / 3.0 + 0.5), dy))
    elif ACT == GELU:
        cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
        dz = dy * (cdf + z * tl.exp(-0.5 * z * z) * 0.3989422804014327)
    elif ACT == GELU_TANH:
        t = _tanh((z + 0.044715 * z * z * z) * 0.7978845608028654)
        dz = dy * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * z * z))
    elif ACT == TANH:
        t = _tanh(z)
        dz = dy * (1.0 - t * t)
    elif ACT == LEAKY_RELU:
        dz = tl.where(z > 0.0, dy, dy * slope)
    else:
        dz = dy
    return dz


@dataclass(frozen=True)
class KernelAct:
    """One activation as the kernels apply it: its name, torch keywords, code and torch form.

    Build it with `kernel_act`, which checks the name and keywords.
    """

    name: str
    negative_slope: float = 0.01
    approximate: str = "none"
    _torch: Callable[[Any], Any] = field(default=lambda t: t, compare=False, repr=False)

    @property
    def code(self) -> int:
        """The constexpr ACT of `act` / `act_grad`."""
        if self.name == "gelu" and self.approximate == "tanh":
            return GELU_TANH_CODE
        return ACT_CODES[self.name]

    @property
    def slope(self) -> float:
        """The runtime `slope` argument (leaky_relu's negative slope; unused by the others)."""
        return float(self.negative_slope)

    @property
    def output_gives_grad(self) -> bool:
        """Whether the derivative is a function of the output y as of z (y > 0 exactly where z > 0),
        so a backward may take y in place of the recomputed z: "none" and relu."""
        return self.code in (NONE.value, RELU.value)

    def keywords(self) -> dict[str, Any]:
        """The torch keywords that differ from torch's defaults ({} for most), as the table lists them."""
        if self.name == "none":
            return {}
        given = {"negative_slope": self.negative_slope, "approximate": self.approximate}
        return {kw: given[kw] for _, kw, default in ACTIVATIONS[self.name].kwargs if given[kw] != default}

    def torch(self, t: Any) -> Any:
        """The activation's torch form applied to tensor t (the table's functional expression)."""
        return self._torch(t)


def kernel_act(name: str, negative_slope: float = 0.01, approximate: str = "none") -> KernelAct:
    """The KernelAct of activation `name` with torch's keywords (each used only by the activation that has it).

    Args:
        name: "none" or an activation the kernels cover (KERNEL_ACTS).
        negative_slope: leaky_relu's slope, in [0, 1].
        approximate: gelu's form, "none" (erf) or "tanh".

    Returns:
        The checked KernelAct.

    Raises:
        ValueError: an activation the kernels do not cover, a keyword the activation does not
            take set to a non-default value, or a value its checker refuses.
    """
    if name not in ACT_CODES:
        raise ValueError(f"the Triton kernels apply {', '.join(KERNEL_ACTS)}; got act={name!r}")
    given = {"negative_slope": negative_slope, "approximate": approximate}
    defaults = {"negative_slope": 0.01, "approximate": "none"}
    own = {kw: attr for attr, kw, _ in ACTIVATIONS[name].kwargs} if name != "none" else {}
    for kw, value in given.items():
        if kw not in own and value != defaults[kw]:
            raise ValueError(f"act={name!r} takes no {kw} (got {value!r})")
    if name == "none":
        return KernelAct(name)
    try:
        fn = activation_fn(name, {attr: given[kw] for kw, attr in own.items()})
    except OpProblem as e:
        raise ValueError(f"act={name!r}: {e.message}") from None
    return KernelAct(name, float(negative_slope), approximate, fn)


RELU_ACT = kernel_act("relu")  # the default of the ops (BNAct's, and the IR's bn_act)
