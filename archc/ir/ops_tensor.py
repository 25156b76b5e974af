"""Tensor ops for the CNNs past the paper's: concat, mul, chunk, split, channel_shuffle.

concat and mul take branch inputs like add: `concat { from a } { from b }` joins the current
value with each branch's (channels, in order); `mul { gate }` multiplies the current value by the
branch's, broadcasting a Cx1x1 gate over a CxHxW map (squeeze-and-excitation). chunk and split
take one channel slice (ShuffleNet's channel split); channel_shuffle interleaves channel groups.
None of them has parameters or multiply-adds (only conv and linear count).
"""

from __future__ import annotations

from typing import Any

from archc.ir.registry import ALIASING, MAX_DIM, REQUIRED, Attrs, OpProblem, OpSpec, Shape, describe, register


def _index(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise OpProblem(f"'{name}' must be an integer, got {describe(v)}", attr=name)
    if not 0 <= v <= MAX_DIM:
        raise OpProblem(f"'{name}' must be >= 0, got {v}", attr=name, hint="slices are numbered from 0")
    return v


def _concat_shape(a: Attrs, ins: list[Shape]) -> Shape:
    first = ins[0]
    for k, s in enumerate(ins[1:], start=1):
        if len(s) != len(first) or s[1:] != first[1:]:
            what = "branch" if k else "value"
            raise OpProblem(
                f"cannot concat {describe(first)} with {describe(s)} (input {k}, a {what}): "
                "all but the channels must agree",
                hint="concat joins maps of the same height and width (or vectors) along the channels; "
                "pool or upsample one of them first",
            )
    return (sum(s[0] for s in ins), *first[1:])


def _mul_shape(a: Attrs, ins: list[Shape]) -> Shape:
    x, y = ins
    if x == y:
        return x
    big, small = (x, y) if len(x) >= len(y) and (len(y) < 3 or y[1:] == (1, 1)) else (y, x)
    if len(big) == 3 and len(small) == 3 and small[1:] == (1, 1) and small[0] == big[0]:
        return big
    raise OpProblem(
        f"cannot multiply {describe(x)} by {describe(y)}",
        hint="mul takes two equal shapes, or a Cx1x1 gate and a CxHxW map with the same C "
        "(e.g. avgpool then convs to C channels, as a squeeze-and-excitation gate)",
    )


def _chunk_range(a: Attrs, c: int) -> tuple[int, int]:
    n, i = a["chunks"], a["index"]
    if c % n:
        raise OpProblem(f"'chunk' of {c} channels into {n} equal parts: {n} does not divide {c}", attr="chunks")
    if i >= n:
        raise OpProblem(f"'chunk' index {i} of {n} chunks (they are numbered 0 to {n - 1})", attr="index")
    return i * (c // n), (i + 1) * (c // n)


def _split_range(a: Attrs, c: int) -> tuple[int, int]:
    size, i = a["size"], a["index"]
    if i * size >= c:
        count = -(-c // size)
        raise OpProblem(
            f"'split' index {i}: {c} channels in pieces of {size} make {count} (numbered 0 to {count - 1})",
            attr="index",
        )
    return i * size, min(c, (i + 1) * size)


def channel_range(op: str, a: Attrs, c: int) -> tuple[int, int]:
    """The channels [start, end) that chunk or split keeps of `c`."""
    return _chunk_range(a, c) if op == "chunk" else _split_range(a, c)


def _slice_shape(op: str):  # noqa: ANN202 - a shape rule
    def shape(a: Attrs, ins: list[Shape]) -> Shape:
        lo, hi = channel_range(op, a, ins[0][0])
        return (hi - lo, *ins[0][1:])

    return shape


def _shuffle_shape(a: Attrs, ins: list[Shape]) -> Shape:
    x = ins[0]
    if len(x) != 3:
        raise OpProblem(f"'channel_shuffle' needs a CxHxW map, got {describe(x)}")
    if x[0] % a["groups"]:
        raise OpProblem(f"'channel_shuffle' groups={a['groups']} must divide the {x[0]} channels", attr="groups")
    return x


register(
    OpSpec(
        name="concat",
        arity=(2, ...),
        shape=_concat_shape,
        label=lambda a: "concat",
        branches=True,
        doc="join the current value and each branch along the channels (DenseNet, Inception, FPN-style merges)",
    )
)
register(
    OpSpec(
        name="mul",
        arity=2,
        shape=_mul_shape,
        label=lambda a: "×",
        commutative=True,
        branches=True,
        doc="multiply the current value by a branch, broadcasting a Cx1x1 gate (squeeze-and-excitation)",
    )
)
register(
    OpSpec(
        name="chunk",
        arity=1,
        attrs={"chunks": ("pos_int", REQUIRED), "index": (_index, REQUIRED)},
        positional=("chunks", "index"),
        shape=_slice_shape("chunk"),
        label=lambda a: f"chunk {a['index']} of {a['chunks']}",
        result=ALIASING,
        hints={"chunks": "e.g. chunk(2, 0): the first half of the channels", "index": "e.g. chunk(2, 1)"},
        doc="one of `chunks` equal channel slices, numbered from 0",
    )
)
register(
    OpSpec(
        name="split",
        arity=1,
        attrs={"size": ("pos_int", REQUIRED), "index": (_index, REQUIRED)},
        positional=("size", "index"),
        shape=_slice_shape("split"),
        label=lambda a: f"split {a['size']}, #{a['index']}",
        result=ALIASING,
        hints={"size": "e.g. split(64, 0): channels 0-63", "index": "e.g. split(64, 1): channels 64-127"},
        doc="one slice of `size` channels (the last may be smaller), numbered from 0",
    )
)
register(
    OpSpec(
        name="channel_shuffle",
        arity=1,
        attrs={"groups": ("pos_int", REQUIRED)},
        positional=("groups",),
        shape=_shuffle_shape,
        label=lambda a: f"channel shuffle, {a['groups']}",
        hints={"groups": "e.g. channel_shuffle(2)"},
        doc="interleave `groups` channel groups (ShuffleNet)",
    )
)
