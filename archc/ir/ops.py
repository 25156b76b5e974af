"""Op specs: for each IR op its attributes, shape rule, parameter count and multiply-adds.

Shapes exclude the batch: (C, H, W) for feature maps, (F,) for vectors. Costs follow
the paper's convention: multiply-adds of conv and linear layers only (BN, ReLU, pooling
and adds are free), counted per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]

REQUIRED = object()
# any dimension past this is a typo or a runaway expression, not a network
MAX_DIM = 1 << 24


class OpProblem(Exception):
    """Raised by op specs; the elaborator turns it into an ArchcError with a location.

    Args:
        message: what is wrong.
        hint: what to do.
        attr: the attribute at fault, if any (its argument is then the location).
    """

    def __init__(self, message: str, hint: str | None = None, attr: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.attr = attr


def _pair(v: Any, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(v, bool) or not isinstance(v, (int, tuple)):
        raise OpProblem(f"'{name}' must be an integer or a KxK pair, got {describe(v)}", attr=name)
    given = v  # quoted as the user wrote it: `/0`, not 0x0
    if isinstance(v, int):
        v = (v, v)
    if len(v) != 2:
        raise OpProblem(f"'{name}' must have two dimensions (like 3x3), got {describe(v)}", attr=name)
    if min(v) < minimum:
        raise OpProblem(f"'{name}' must be >= {minimum}, got {describe(given)}", attr=name)
    if max(v) > MAX_DIM:
        raise OpProblem(f"'{name}' is too large: {describe(given)}", attr=name)
    return (int(v[0]), int(v[1]))


def describe(v: Any) -> str:
    """Show a spec value the way it is written in .arch text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "x".join(str(d) for d in v)
    return str(v)


# Attribute kinds: a checker that returns the normalised value or raises OpProblem.
def _pos_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise OpProblem(f"'{name}' must be an integer, got {describe(v)}", attr=name)
    if v < 1:
        raise OpProblem(f"'{name}' must be >= 1, got {v}", attr=name)
    if v > MAX_DIM:
        raise OpProblem(f"'{name}' is too large: {v}", attr=name)
    return v


def _bool(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise OpProblem(f"'{name}' must be true or false, got {describe(v)}", attr=name)
    return v


def _float_in(lo: float, hi: float) -> Callable[[Any, str], float]:
    def check(v: Any, name: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise OpProblem(f"'{name}' must be a number, got {describe(v)}", attr=name)
        if not lo <= v <= hi:
            raise OpProblem(f"'{name}' must be in [{lo}, {hi}], got {v}", attr=name)
        return float(v)

    return check


KINDS: dict[str, Callable[[Any, str], Any]] = {
    "pos_int": _pos_int,
    "bool": _bool,
    "kernel": lambda v, n: _pair(v, n, 1),
    "stride": lambda v, n: _pair(v, n, 1),
    "padding": lambda v, n: _pair(v, n, 0),
    "dilation": lambda v, n: _pair(v, n, 1),
    "eps": _float_in(0.0, 1.0),
    "momentum": _float_in(0.0, 1.0),
    "act": lambda v, n: _choice(v, n, ("none", "relu")),
    "name": lambda v, n: v if v is None or isinstance(v, str) else _choice(v, n, ()),
}


def _choice(v: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise OpProblem(f"'{name}' must be one of {', '.join(allowed)}, got {describe(v)}", attr=name)
    return str(v)


@dataclass(frozen=True)
class OpSpec:
    """One IR op: its attributes (name -> (kind, default)), positional order, and rules.

    `infer(attrs, in_shapes)` returns the output shape; `params` and `macs` return
    the op's learnable parameter count and multiply-adds for one image.
    """

    name: str
    attrs: dict[str, tuple[str, Any]]
    positional: tuple[str, ...]
    arity: int | tuple[int, ...]  # a tuple lists every allowed input count
    infer: Callable[[dict, list[Shape]], Shape]
    params: Callable[[dict, list[Shape], Shape], int] = lambda a, i, o: 0
    macs: Callable[[dict, list[Shape], Shape], int] = lambda a, i, o: 0

    def check_attrs(self, given: dict[str, Any]) -> dict[str, Any]:
        """Validate and normalise attributes; defaults fill the rest (None = derived).

        Raises:
            OpProblem: an unknown, missing or ill-typed attribute.
        """
        out: dict[str, Any] = {}
        for key, value in given.items():
            if key not in self.attrs:
                raise OpProblem(f"'{self.name}' has no parameter '{key}'", attr=key)
            out[key] = KINDS[self.attrs[key][0]](value, key)
        for key, (_, default) in self.attrs.items():
            if key in out:
                continue
            if default is REQUIRED:
                raise OpProblem(f"'{self.name}' needs '{key}'", hint=_REQUIRED_HINTS.get((self.name, key)))
            out[key] = default
        return out


_REQUIRED_HINTS = {
    ("conv", "kernel"): "give the kernel like the paper: conv(3x3, 64)",
    ("conv", "out"): "give the output channels: conv(3x3, 64)",
    ("linear", "out"): "give the output features: linear(1000)",
    ("maxpool", "kernel"): "give the window: maxpool(3x3, /2)",
    ("pad", "out"): "give the channel count to pad to: pad(64)",
}


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


def _auto_padding(a: dict) -> None:
    # "same"-style padding for odd kernels, as every conv and pool in the paper uses
    if a.get("padding") is None:
        dh, dw = a.get("dilation") or (1, 1)
        a["padding"] = (dh * (a["kernel"][0] - 1) // 2, dw * (a["kernel"][1] - 1) // 2)


# --- conv -------------------------------------------------------------------
def _conv_infer(a: dict, ins: list[Shape]) -> Shape:
    c, h, w = _need_map(ins[0], "conv")
    g = a["groups"]
    if c % g or a["out"] % g:
        raise OpProblem(
            f"groups={g} must divide both the input channels ({c}) and the output channels ({a['out']})",
            attr="groups",
        )
    _auto_padding(a)
    return (a["out"], *_window("conv", h, w, a))


def _conv_params(a: dict, ins: list[Shape], out: Shape) -> int:
    kh, kw = a["kernel"]
    return a["out"] * (ins[0][0] // a["groups"]) * kh * kw + (a["out"] if a["bias"] else 0)


def _conv_macs(a: dict, ins: list[Shape], out: Shape) -> int:
    kh, kw = a["kernel"]
    return a["out"] * (ins[0][0] // a["groups"]) * kh * kw * out[1] * out[2]


# --- pooling ------------------------------------------------------------------
def _pool_infer(op: str) -> Callable[[dict, list[Shape]], Shape]:
    def infer(a: dict, ins: list[Shape]) -> Shape:
        c, h, w = _need_map(ins[0], op)
        if a.get("kernel") is None:  # global average pooling
            a.update(stride=None, padding=None)
            return (c, 1, 1)
        if a["stride"] is None:
            a["stride"] = a["kernel"]
        _auto_padding(a)
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


OPS: dict[str, OpSpec] = {
    s.name: s
    for s in [
        OpSpec("input", {}, (), 0, lambda a, i: a["shape"]),
        OpSpec(
            "conv",
            {
                "out": ("pos_int", REQUIRED),
                "kernel": ("kernel", REQUIRED),
                "stride": ("stride", (1, 1)),
                "padding": ("padding", None),
                "dilation": ("dilation", (1, 1)),
                "groups": ("pos_int", 1),
                "bias": ("bool", False),
            },
            ("out",),
            1,
            _conv_infer,
            _conv_params,
            _conv_macs,
        ),
        OpSpec(
            "bn",
            {"eps": ("eps", 1e-5), "momentum": ("momentum", 0.1), "track_running_stats": ("bool", True)},
            (),
            1,
            _bn_infer,
            lambda a, i, o: 2 * i[0][0],
        ),
        # BN as a fixed affine (detection fine-tuning): the same attributes, parameters and buffers as bn,
        # normalised with the running statistics in train mode too
        OpSpec(
            "frozen_bn",
            {"eps": ("eps", 1e-5), "momentum": ("momentum", 0.1), "track_running_stats": ("bool", True)},
            (),
            1,
            _bn_infer,
            lambda a, i, o: 2 * i[0][0],
        ),
        OpSpec("relu", {}, (), 1, _same),
        OpSpec(
            "maxpool",
            {
                "kernel": ("kernel", REQUIRED),
                "stride": ("stride", None),
                "padding": ("padding", None),
                "dilation": ("dilation", (1, 1)),
                "ceil_mode": ("bool", False),
            },
            (),
            1,
            _pool_infer("maxpool"),
        ),
        OpSpec(
            "avgpool",
            {
                "kernel": ("kernel", None),
                "stride": ("stride", None),
                "padding": ("padding", None),
                "ceil_mode": ("bool", False),
            },
            (),
            1,
            _pool_infer("avgpool"),
        ),
        OpSpec(
            "linear",
            {"out": ("pos_int", REQUIRED), "bias": ("bool", True)},
            ("out",),
            1,
            _linear_infer,
            lambda a, i, o: i[0][0] * a["out"] + (a["out"] if a["bias"] else 0),
            lambda a, i, o: i[0][0] * a["out"],
        ),
        OpSpec("flatten", {}, (), 1, _flatten_infer),
        OpSpec("identity", {}, (), 1, _same),
        OpSpec("add", {}, (), 2, _add_infer),
        OpSpec("subsample", {"stride": ("stride", REQUIRED)}, ("stride",), 1, _subsample_infer),
        OpSpec("pad", {"out": ("pos_int", REQUIRED)}, ("out",), 1, _pad_infer),
    ]
}

# Ops a spec can call by name (input and add have statements of their own).
LAYERS = tuple(n for n in OPS if n not in ("input", "add"))
