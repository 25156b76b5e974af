"""Train-only randomness: dropout and drop_path (stochastic depth).

Both are the identity in eval mode and have no parameters and no multiply-adds. Both may return
their input unchanged (eval mode, or p = 0), so their result is ALIASING.
"""

from __future__ import annotations

from typing import Any

from archc.ir.registry import ALIASING, REQUIRED, OpProblem, OpSpec, Shape, describe, register


def probability(v: Any, name: str) -> float:
    """A checker for a drop probability: a number in [0, 1) (p = 1 would drop everything)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise OpProblem(f"'{name}' must be a number, got {describe(v)}", attr=name)
    if not 0 <= v < 1:
        raise OpProblem(
            f"'{name}' must be in [0, 1), got {v}",
            hint="p is the probability of dropping; p = 1 would zero the layer's output in training",
            attr=name,
        )
    return float(v)


def _same(a: dict, ins: list[Shape]) -> Shape:
    return ins[0]


register(
    OpSpec(
        name="dropout",
        arity=1,
        attrs={"p": (probability, 0.5)},
        positional=("p",),
        shape=_same,
        label=lambda a: f"dropout {a['p']:g}",
        result=ALIASING,
        family="random",
        doc="zero each element with probability p in training (scaled by 1/(1-p)); identity in eval",
    )
)
register(
    OpSpec(
        name="drop_path",
        arity=1,
        attrs={"p": (probability, REQUIRED)},
        positional=("p",),
        shape=_same,
        label=lambda a: f"drop path {a['p']:g}",
        result=ALIASING,
        family="random",
        hints={"p": "give the drop probability: drop_path(0.1)"},
        doc="stochastic depth: zero each sample with probability p in training (scaled by 1/(1-p)); identity in eval",
    )
)
