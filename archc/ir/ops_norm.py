"""Norms and scales (ConvNeXt-style nets): layer_norm, group_norm and layer_scale.

Each works per channel of a C x H x W map (layer_norm and layer_scale also on an F-vector). They
have learnable parameters but no multiply-adds: only conv and linear count (the paper's convention).
"""

from __future__ import annotations

import math
from typing import Any

from archc.ir.ops import _need_map
from archc.ir.registry import REQUIRED, OpProblem, OpSpec, Shape, describe, register


def _channels_or_features(op: str, shape: Shape) -> Shape:
    """A map or a vector, whose first dimension is what the op scales."""
    if len(shape) not in (1, 3):
        raise OpProblem(f"'{op}' needs a CxHxW map or a vector, but its input is {describe(shape)}")
    return shape


def _layer_norm_shape(a: dict, ins: list[Shape]) -> Shape:
    return _channels_or_features("layer_norm", ins[0])


def _group_norm_shape(a: dict, ins: list[Shape]) -> Shape:
    c = _need_map(ins[0], "group_norm")[0]
    if c % a["groups"]:
        raise OpProblem(
            f"groups={a['groups']} must divide the input channels ({c})",
            hint="choose a divisor of the channel count (32 groups need a multiple of 32 channels)",
            attr="groups",
        )
    return ins[0]


def _layer_scale_shape(a: dict, ins: list[Shape]) -> Shape:
    return _channels_or_features("layer_scale", ins[0])


def _two_per_channel(a: dict, ins: list[Shape], out: Shape) -> int:
    return 2 * ins[0][0]


def finite(v: Any, name: str) -> float:
    """A checker for any finite number (an initial value)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise OpProblem(f"'{name}' must be a number, got {describe(v)}", attr=name)
    return float(v)


register(
    OpSpec(
        name="layer_norm",
        arity=1,
        # ConvNeXt's (and torchvision's ViT's) 1e-6, not nn.LayerNorm's 1e-5: the zoo's nets use it
        attrs={"eps": ("eps", 1e-6)},
        shape=_layer_norm_shape,
        params=_two_per_channel,
        label=lambda a: "layer norm",
        family="norm",
        doc="layer normalisation over the channels at each position of a map, or over a vector",
    )
)
register(
    OpSpec(
        name="group_norm",
        arity=1,
        attrs={"groups": ("pos_int", REQUIRED), "eps": ("eps", 1e-5)},
        positional=("groups",),
        shape=_group_norm_shape,
        params=_two_per_channel,
        label=lambda a: f"group norm, {a['groups']}",
        family="norm",
        hints={"groups": "give the number of groups: group_norm(32)"},
        doc="group normalisation of a map: the channels in `groups` groups",
    )
)
register(
    OpSpec(
        name="layer_scale",
        arity=1,
        attrs={"init": (finite, 1e-6)},
        positional=("init",),
        shape=_layer_scale_shape,
        params=lambda a, i, o: i[0][0],
        label=lambda a: "layer scale",
        elementwise=True,
        doc="a learnable per-channel scale (ConvNeXt's layer scale), every entry starting at `init`",
    )
)
