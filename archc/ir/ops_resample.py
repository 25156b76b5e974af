"""Resampling of maps: upsample (nearest or bilinear) and adaptive pooling to a fixed size.

None has parameters or multiply-adds (only conv and linear count, the paper's convention).
"""

from __future__ import annotations

from archc.ir.ops import _need_map, dims_text
from archc.ir.registry import MAX_DIM, REQUIRED, Attrs, OpProblem, OpSpec, Shape, choice, register


def _upsample_shape(a: dict, ins: list[Shape]) -> Shape:
    c, h, w = _need_map(ins[0], "upsample")
    if (a["scale"] is None) == (a["size"] is None):
        raise OpProblem(
            "'upsample' needs exactly one of 'scale' and 'size'",
            hint="upsample(scale=2) doubles the map; upsample(size=14x14) resizes it to 14x14",
            attr="size" if a["size"] is not None else None,
        )
    if a["align_corners"] and a["mode"] != "bilinear":
        raise OpProblem(
            "'align_corners' applies to bilinear upsampling only",
            hint="give mode=bilinear, or leave align_corners out",
            attr="align_corners",
        )
    if a["size"] is not None:
        return (c, *a["size"])
    sh, sw = a["scale"]
    if max(h * sh, w * sw) > MAX_DIM:
        raise OpProblem(f"'upsample' would make a {h * sh}x{w * sw} map", attr="scale")
    return (c, h * sh, w * sw)


def _upsample_label(a: Attrs) -> str:
    what = f"x{dims_text(a['scale'])}" if a["scale"] is not None else f"to {'x'.join(map(str, a['size']))}"
    return f"upsample {what}, {a['mode']}" + (", align corners" if a["align_corners"] else "")


def _adaptive_shape(op: str):
    def shape(a: dict, ins: list[Shape]) -> Shape:
        c = _need_map(ins[0], op)[0]
        return (c, *a["size"])

    return shape


def _adaptive(kind: str) -> OpSpec:
    op = f"adaptive_{kind}pool"
    return OpSpec(
        name=op,
        arity=1,
        attrs={"size": ("kernel", REQUIRED)},  # an integer or an HxW pair, >= 1
        positional=("size",),
        shape=_adaptive_shape(op),
        label=lambda a: f"adaptive {kind} pool, {'x'.join(map(str, a['size']))}",
        family="pool",
        hints={"size": f"give the output size: {op}(7x7), or {op}(1) for global pooling"},
        doc=f"{kind} pooling to a fixed output size, whatever the input size",
    )


register(
    OpSpec(
        name="upsample",
        arity=1,
        attrs={
            "scale": ("stride", None),  # an integer or an HxW pair, >= 1
            "size": ("kernel", None),
            "mode": (choice("nearest", "bilinear"), "nearest"),
            "align_corners": ("bool", False),
        },
        shape=_upsample_shape,
        label=_upsample_label,
        doc="enlarge a map by an integer scale, or resize it to a size (nearest or bilinear)",
    )
)
register(_adaptive("avg"))
register(_adaptive("max"))
