"""The core ops of the paper's networks, each declared once in the registry.

Costs follow the paper's convention: multiply-adds of conv and linear layers only (BN, ReLU,
pooling and adds are free), counted per image. Shape rules are pure: derived attributes
("same" padding, a pool's stride) are filled by each op's `derive`, never by its shape rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from archc.ir.registry import (
    ALIASING,
    KINDS,
    MAX_DIM,
    OPS,
    REQUIRED,
    Attrs,
    OpProblem,
    OpSpec,
    Shape,
    describe,
    register,
    surface_ops,
)

__all__ = ["KINDS", "MAX_DIM", "OPS", "REQUIRED", "OpProblem", "OpSpec", "Shape", "describe", "surface_ops"]


def _need_map(shape: Shape, op: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise OpProblem(
            f"'{op}' needs a CxHxW feature map, but its input is {describe(shape)}",
            hint="flatten comes after the last spatial layer; only linear takes vectors",
        )
    return shape  # type: ignore[return-value]


def _window(op: str, h: int, w: int, a: dict) -> tuple[int, int]:
    """Output size of a sliding window; refuses one that makes the map vanish."""
    kh, kw = a["kernel"]
    sh, sw = a["stride"]
    ph, pw = a["padding"]
    dh, dw = a.get("dilation") or (1, 1)
    rnd = math.ceil if a.get("ceil_mode") else math.floor
    ho = rnd((h + 2 * ph - dh * (kh - 1) - 1) / sh) + 1
    wo = rnd((w + 2 * pw - dw * (kw - 1) - 1) / sw) + 1
    if ho < 1 or wo < 1:
        raise OpProblem(
            f"'{op}' makes the {h}x{w} feature map vanish (kernel {kh}x{kw}, stride {sh}x{sw}, "
            f"padding {ph}x{pw} gives {ho}x{wo})",
            hint="use a larger input, a smaller kernel or stride, or fewer downsampling stages",
        )
    return ho, wo


def auto_padding(a: Attrs, ins: list[Shape]) -> Attrs:
    """Derive "same"-style padding for odd kernels, as every conv and pool in the paper uses."""
    if a.get("padding") is None and a.get("kernel") is not None:
        dh, dw = a.get("dilation") or (1, 1)
        a["padding"] = (dh * (a["kernel"][0] - 1) // 2, dw * (a["kernel"][1] - 1) // 2)
    return a


# --- conv -------------------------------------------------------------------
def conv_shape(a: dict, ins: list[Shape]) -> Shape:
    """The shape rule of conv (and of fused_conv's convolution)."""
    c, h, w = _need_map(ins[0], "conv")
    g = a["groups"]
    if c % g or a["out"] % g:
        raise OpProblem(
            f"groups={g} must divide both the input channels ({c}) and the output channels ({a['out']})",
            attr="groups",
        )
    return (a["out"], *_window("conv", h, w, a))


def conv_params(a: dict, ins: list[Shape], out: Shape) -> int:
    kh, kw = a["kernel"]
    return a["out"] * (ins[0][0] // a["groups"]) * kh * kw + (a["out"] if a["bias"] else 0)


def conv_macs(a: dict, ins: list[Shape], out: Shape) -> int:
    kh, kw = a["kernel"]
    return a["out"] * (ins[0][0] // a["groups"]) * kh * kw * out[1] * out[2]


# --- pooling ------------------------------------------------------------------
def _pool_derive(a: Attrs, ins: list[Shape]) -> Attrs:
    if a.get("kernel") is None:  # global average pooling
        a.update(stride=None, padding=None)
        return a
    if a["stride"] is None:
        a["stride"] = a["kernel"]
    return auto_padding(a, ins)


def _pool_infer(op: str) -> Callable[[dict, list[Shape]], Shape]:
    def infer(a: dict, ins: list[Shape]) -> Shape:
        c, h, w = _need_map(ins[0], op)
        if a.get("kernel") is None:
            return (c, 1, 1)
        if any(p > k // 2 for p, k in zip(a["padding"], a["kernel"])):
            raise OpProblem(f"'{op}' padding must be at most half the kernel", attr="padding")
        return (c, *_window(op, h, w, a))

    return infer


# --- the rest ---------------------------------------------------------------------
def _bn_infer(a: dict, ins: list[Shape]) -> Shape:
    return _need_map(ins[0], "bn")


def _linear_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 1:
        raise OpProblem(
            f"'linear' needs a vector, but its input is {describe(ins[0])}",
            hint="put 'flatten' (after a global 'avgpool') before 'linear'",
        )
    return (a["out"],)


def _flatten_infer(a: dict, ins: list[Shape]) -> Shape:
    n = math.prod(ins[0])
    if n > MAX_DIM:
        raise OpProblem(f"'flatten' would make a vector of {n} features", hint="pool the map first")
    return (n,)


def _add_infer(a: dict, ins: list[Shape]) -> Shape:
    main, short = ins
    if main == short:
        return main
    if len(main) == 3 and len(short) == 3:
        if main[0] != short[0] and main[1:] == short[1:]:
            what = f"channel mismatch: the block makes {main[0]} channels but its shortcut carries {short[0]}"
        elif main[0] == short[0]:
            what = (
                f"spatial mismatch: the block makes {main[1]}x{main[2]} but its shortcut carries {short[1]}x{short[2]}"
            )
        else:
            what = f"shape mismatch: the block makes {describe(main)} but its shortcut carries {describe(short)}"
        raise OpProblem(
            f"cannot add: {what}",
            hint="use a projection shortcut (option B or C: 1x1 conv + bn with the block's stride) or "
            "option A (subsample + zero-padded channels) in the add's branch, e.g. "
            "add { downsample: shortcut_path(channels, stride, option=B) }",
        )
    raise OpProblem(f"cannot add {describe(main)} to {describe(short)}")


def _subsample_infer(a: dict, ins: list[Shape]) -> Shape:
    c, h, w = _need_map(ins[0], "subsample")
    sh, sw = a["stride"]
    return (c, -(-h // sh), -(-w // sw))


def _pad_infer(a: dict, ins: list[Shape]) -> Shape:
    c, h, w = _need_map(ins[0], "pad")
    if a["out"] < c:
        raise OpProblem(f"'pad' to {a['out']} channels, but the input already has {c}", attr="out")
    return (a["out"], h, w)


def _same(a: dict, ins: list[Shape]) -> Shape:
    return ins[0]


# --- picture labels (Fig. 3 of the paper: "3x3 conv, 128, /2") ----------------------------------
def dims_text(v: Any) -> str:
    """A stride or size as a label shows it: 2, or 2x1 when the sides differ."""
    if isinstance(v, (tuple, list)):
        if len(v) == 2 and v[0] == v[1]:
            return str(v[0])
        return "x".join(str(d) for d in v)
    return str(v)


def _kernel(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "x".join(str(d) for d in v)
    return f"{v}x{v}"


def is_one(v: Any) -> bool:
    """A stride or dilation of 1 in every dimension (or none given)."""
    return v is None or all(d == 1 for d in (v if isinstance(v, (tuple, list)) else (v,)))


def conv_label(a: Attrs) -> str:
    """ "3x3 conv, 64, /2" (with dilation and groups when they are not 1)."""
    parts = [f"{_kernel(a['kernel'])} conv", str(a["out"])]
    if not is_one(a.get("stride")):
        parts.append(f"/{dims_text(a['stride'])}")
    if not is_one(a.get("dilation")):
        parts.append(f"dilation {dims_text(a['dilation'])}")
    if a.get("groups", 1) != 1:
        parts.append(f"groups {a['groups']}")
    return ", ".join(parts)


def _pool_label(kind: str) -> Callable[[Attrs], str]:
    def label(a: Attrs) -> str:
        if a.get("kernel") is None:
            return f"{kind} pool"
        text = f"{_kernel(a['kernel'])} {kind} pool"
        if not is_one(a.get("stride")):
            text += f", /{dims_text(a['stride'])}"
        return text

    return label


# --- the declarations ---------------------------------------------------------------------------
BN_ATTRS = {"eps": ("eps", 1e-5), "momentum": ("momentum", 0.1), "track_running_stats": ("bool", True)}
CONV_ATTRS = {
    "out": ("pos_int", REQUIRED),
    "kernel": ("kernel", REQUIRED),
    "stride": ("stride", (1, 1)),
    "padding": ("padding", None),
    "dilation": ("dilation", (1, 1)),
    "groups": ("pos_int", 1),
    "bias": ("bool", False),
}


LINEAR_ATTRS = {"out": ("pos_int", REQUIRED), "bias": ("bool", True)}


def _linear_params(a: Attrs, ins: list[Shape], out: Shape) -> int:
    """nn.Linear's weight (out x in features or channels) and bias."""
    return ins[0][0] * a["out"] + (a["out"] if a["bias"] else 0)


def _bn_params(a: Attrs, ins: list[Shape], out: Shape) -> int:
    return 2 * ins[0][0]


# the caller's tensor: never written in place (result ALIASING)
register(
    OpSpec(name="input", arity=0, shape=lambda a, i: a["shape"], surface=False, result=ALIASING, doc="the net's input")
)
register(
    OpSpec(
        name="conv",
        arity=1,
        attrs=CONV_ATTRS,
        positional=("out",),
        shape=conv_shape,
        derive=auto_padding,
        params=conv_params,
        macs=conv_macs,
        label=conv_label,
        weighted=True,
        family="conv",
        hints={
            "kernel": "give the kernel like the paper: conv(3x3, 64)",
            "out": "give the output channels: conv(3x3, 64)",
        },
        doc="2-D convolution",
    )
)
register(
    OpSpec(
        name="bn",
        arity=1,
        attrs=BN_ATTRS,
        shape=_bn_infer,
        params=_bn_params,
        family="norm",
        doc="batch normalisation over the channels of a map",
    )
)
# BN as a fixed affine (detection fine-tuning): the same attributes, parameters and buffers as bn,
# normalised with the running statistics in train mode too
register(
    OpSpec(
        name="frozen_bn",
        arity=1,
        attrs=BN_ATTRS,
        shape=_bn_infer,
        params=_bn_params,
        family="norm",
        doc="batch normalisation frozen to its running statistics",
    )
)
register(OpSpec(name="relu", arity=1, shape=_same, elementwise=True, family="act", doc="max(x, 0)"))
register(
    OpSpec(
        name="maxpool",
        arity=1,
        attrs={
            "kernel": ("kernel", REQUIRED),
            "stride": ("stride", None),
            "padding": ("padding", None),
            "dilation": ("dilation", (1, 1)),
            "ceil_mode": ("bool", False),
        },
        shape=_pool_infer("maxpool"),
        derive=_pool_derive,
        label=_pool_label("max"),
        family="pool",
        hints={"kernel": "give the window: maxpool(3x3, /2)"},
        doc="max pooling",
    )
)
register(
    OpSpec(
        name="avgpool",
        arity=1,
        attrs={
            "kernel": ("kernel", None),
            "stride": ("stride", None),
            "padding": ("padding", None),
            "ceil_mode": ("bool", False),
            "count_include_pad": ("bool", True),
        },
        shape=_pool_infer("avgpool"),
        derive=_pool_derive,
        label=_pool_label("avg"),
        family="pool",
        doc="average pooling; without a kernel, global average pooling to 1x1",
    )
)
register(
    OpSpec(
        name="linear",
        arity=1,
        attrs=LINEAR_ATTRS,
        positional=("out",),
        shape=_linear_infer,
        params=_linear_params,
        macs=lambda a, i, o: i[0][0] * a["out"],
        label=lambda a: f"fc {a['out']}",
        weighted=True,
        hints={"out": "give the output features: linear(1000)"},
        doc="fully connected layer on a vector",
    )
)
register(OpSpec(name="flatten", arity=1, shape=_flatten_infer, result=ALIASING, doc="a map to a vector"))


def _channel_linear_shape(a: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = _need_map(ins[0], "channel_linear")
    return (a["out"], h, w)


# ConvNeXt's pointwise layers: nn.Linear over the channels at every position (weight out x in, not a 1x1 conv's
# out x in x 1 x 1, so torchvision's checkpoints load); the same maths as conv(1x1, out, bias=true)
register(
    OpSpec(
        name="channel_linear",
        arity=1,
        attrs=LINEAR_ATTRS,
        positional=("out",),
        shape=_channel_linear_shape,
        params=_linear_params,
        macs=lambda a, i, o: i[0][0] * a["out"] * o[1] * o[2],
        label=lambda a: f"fc {a['out']} per position",
        weighted=True,
        hints={"out": "give the output channels: channel_linear(384)"},
        doc="a fully connected layer over the channels at every position of a map (nn.Linear weights)",
    )
)

register(OpSpec(name="identity", arity=1, shape=_same, result=ALIASING, elementwise=True, doc="the input unchanged"))
register(
    OpSpec(
        name="add",
        arity=2,
        shape=_add_infer,
        label=lambda a: "+",
        elementwise=True,
        commutative=True,
        branches=True,
        shortcut_slot=1,
        doc="the current value plus a branch (by default the scope's input: a residual connection)",
    )
)
register(
    OpSpec(
        name="subsample",
        arity=1,
        attrs={"stride": ("stride", REQUIRED)},
        positional=("stride",),
        shape=_subsample_infer,
        label=lambda a: f"subsample /{dims_text(a['stride'])}",
        result=ALIASING,
        doc="keep every stride-th row and column (option A shortcuts)",
    )
)
register(
    OpSpec(
        name="pad",
        arity=1,
        attrs={"out": ("pos_int", REQUIRED)},
        positional=("out",),
        shape=_pad_infer,
        label=lambda a: f"zero-pad to {a['out']}",
        result=ALIASING,
        hints={"out": "give the channel count to pad to: pad(64)"},
        doc="zero-pad the channels up to `out` (option A shortcuts)",
    )
)
