"""Fused ops: produced by the optimisation passes, never written in a spec.

fused_conv (eval):  y = act(conv(x, W') + b' [+ r])
    W', b' are the conv's weights with the following BN folded in (when `folded_bn`
    names it): s = gamma / sqrt(var + eps); W' = W * s; b' = (b - mean) * s + beta.
    The node keeps the conv's name, so its module is the conv's; `folded_bn` tells
    weight loading where to find the BN statistics in an unoptimised checkpoint.

bn_act (train):     y = act(bn(x) [+ r])
    Keeps the BN's name and parameters/buffers, so train-mode checkpoints are the
    same for every backend and pipeline.
"""

from __future__ import annotations

from archc.ir.ops import OPS, OpProblem, OpSpec, Shape, _conv_infer, _conv_macs, describe


def _residual_shape(a: dict, ins: list[Shape], out: Shape, op: str) -> Shape:
    if a["residual"] != (len(ins) == 2):
        raise OpProblem(f"'{op}' has residual={a['residual']} but {len(ins)} inputs")
    if a["residual"] and ins[1] != out:
        raise OpProblem(f"'{op}' residual {describe(ins[1])} does not match its output {describe(out)}")
    return out


def _fused_conv_infer(a: dict, ins: list[Shape]) -> Shape:
    return _residual_shape(a, ins, _conv_infer(a, ins[:1]), "fused_conv")


def _fused_conv_params(a: dict, ins: list[Shape], out: Shape) -> int:
    kh, kw = a["kernel"]
    return a["out"] * (ins[0][0] // a["groups"]) * kh * kw + (a["out"] if a["bias"] else 0)


def _bn_act_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 3:
        raise OpProblem(f"'bn_act' needs a CxHxW feature map, got {describe(ins[0])}")
    return _residual_shape(a, ins, ins[0], "bn_act")


CONV_ATTRS = dict(OPS["conv"].attrs)

FUSED = [
    OpSpec(
        "fused_conv",
        {
            **CONV_ATTRS,
            "act": ("act", "none"),
            "residual": ("bool", False),
            "folded_bn": ("name", None),
            "bn_eps": ("eps", 1e-5),
            "conv_bias": ("bool", False),
        },
        (),
        (1, 2),
        _fused_conv_infer,
        _fused_conv_params,
        lambda a, i, o: _conv_macs(a, i[:1], o),
    ),
    OpSpec(
        "bn_act",
        {
            **OPS["bn"].attrs,
            "act": ("act", "relu"),
            "residual": ("bool", False),
        },
        (),
        (1, 2),
        _bn_act_infer,
        lambda a, i, o: 2 * i[0][0],
    ),
]

for _spec in FUSED:
    OPS[_spec.name] = _spec
