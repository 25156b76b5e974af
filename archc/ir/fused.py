"""Fused ops: produced by the optimisation passes, never written in a spec.

fused_conv (eval):  y = act(conv(x, W') + b' [+ r])
    W', b' are the conv's weights with the following BN folded in (when `folded_bn`
    names it): s = gamma / sqrt(var + eps); W' = W * s; b' = (b - mean) * s + beta.
    The node keeps the conv's name, so its module is the conv's; `folded_bn` tells
    weight loading where to find the BN statistics in an unoptimised checkpoint.

bn_act (train):     y = act(bn(x) [+ r])
    Keeps the BN's name and parameters/buffers, so train-mode checkpoints are the
    same for every backend and pipeline.

`act` is "none" or any activation of archc.ir.activations' table. The activation's own
attributes ride along as `act_<attr>` (`act_slope` for leaky_relu, `act_approximate` for
gelu), present exactly when `act` has them, so a ReLU epilogue's attributes are the same as
before the family was fusable. `epilogue_attrs` writes them, `epilogue_act` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from archc.ir.activations import ACTIVATIONS
from archc.ir.ops import BN_ATTRS, CONV_ATTRS, auto_padding, conv_label, conv_macs, conv_params, conv_shape
from archc.ir.registry import OPS, OPTIONAL, OpProblem, OpSpec, Shape, describe, register

__all__ = ["ACT_ATTRS", "epilogue_act", "epilogue_attrs"]


def _act_kind(v: Any, name: str) -> str:
    # no `allowed` list: fused ops are never written in a spec, so their values are no spec symbols
    if not isinstance(v, str) or (v != "none" and v not in ACTIVATIONS):
        raise OpProblem(f"'{name}' must be none or one of {', '.join(ACTIVATIONS)}, got {describe(v)}", attr=name)
    return v


# act_<attr> for every attribute of every activation, checked by the activation's own checker
ACT_ATTRS: dict[str, tuple[Any, Any]] = {
    f"act_{attr}": (kind, OPTIONAL) for name in ACTIVATIONS for attr, (kind, _) in OPS[name].attrs.items()
}


def epilogue_attrs(act: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A fused op's epilogue attributes for activation `act` applied with `attrs` (its node's attributes)."""
    return {"act": act, **{f"act_{k}": v for k, v in attrs.items()}}


def epilogue_act(attrs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(activation or "none", the activation's attributes) of a fused op's epilogue."""
    return attrs["act"], {k[4:]: v for k, v in attrs.items() if k.startswith("act_")}


def _check_act(a: dict, op: str) -> None:
    act, given = epilogue_act(a)
    wanted = {f"act_{k}" for k in OPS[act].attrs} if act != "none" else set()
    got = {f"act_{k}" for k in given}
    if got != wanted:
        raise OpProblem(f"'{op}' with act={act} needs the attributes {sorted(wanted)}, got {sorted(got)}")


def _residual_shape(a: dict, ins: list[Shape], out: Shape, op: str) -> Shape:
    _check_act(a, op)
    if a["residual"] != (len(ins) == 2):
        raise OpProblem(f"'{op}' has residual={a['residual']} but {len(ins)} inputs")
    if a["residual"] and ins[1] != out:
        raise OpProblem(f"'{op}' residual {describe(ins[1])} does not match its output {describe(out)}")
    return out


def _fused_conv_infer(a: dict, ins: list[Shape]) -> Shape:
    return _residual_shape(a, ins, conv_shape(a, ins[:1]), "fused_conv")


def _bn_act_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 3:
        raise OpProblem(f"'bn_act' needs a CxHxW feature map, got {describe(ins[0])}")
    return _residual_shape(a, ins, ins[0], "bn_act")


def _epilogue(first: str, a: dict) -> str:
    parts = [first]
    if a.get("folded_bn"):
        parts.append("bn")
    if a.get("residual"):
        parts.append("add")
    act, attrs = epilogue_act(a)
    if act != "none":
        parts.append(OPS[act].text(attrs))
    return " + ".join(parts)


register(
    OpSpec(
        name="fused_conv",
        arity=(1, 2),
        attrs={
            **CONV_ATTRS,
            "act": (_act_kind, "none"),
            **ACT_ATTRS,
            "residual": ("bool", False),
            "folded_bn": ("name", None),
            "bn_eps": ("eps", 1e-5),
            "conv_bias": ("bool", False),
        },
        shape=_fused_conv_infer,
        derive=auto_padding,
        params=lambda a, i, o: conv_params(a, i[:1], o),
        macs=lambda a, i, o: conv_macs(a, i[:1], o),
        label=lambda a: _epilogue(conv_label(a), a),
        surface=False,
        weighted=True,
        family="conv",
        shortcut_slot=1,
        doc="conv with its folded BN, residual add and activation (eval)",
    )
)
register(
    OpSpec(
        name="bn_act",
        arity=(1, 2),
        attrs={**BN_ATTRS, "act": (_act_kind, "relu"), **ACT_ATTRS, "residual": ("bool", False)},
        shape=_bn_act_infer,
        params=lambda a, i, o: 2 * i[0][0],
        label=lambda a: _epilogue("bn", a),
        surface=False,
        family="norm",
        shortcut_slot=1,
        doc="BN with its residual add and activation (train)",
    )
)
