"""The op registry: one OpSpec per IR op holds everything the compiler knows about it.

An op is declared once, with `register(OpSpec(...))`: its attributes and their checkers, the
positional attribute order, arity, shape rule, parameter count, multiply-adds, traits and its
picture label. Every consumer (the elaborator, Graph, codegen, viz, passes, layout, training,
docs checks) asks this registry instead of keeping its own list of op names.

Shapes exclude the batch: (C, H, W) for feature maps, (F,) for vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]
Attrs = dict[str, Any]
ShapeRule = Callable[[Attrs, list[Shape]], Shape]
CostRule = Callable[[Attrs, list[Shape], Shape], int]

REQUIRED = object()
# the default of an attribute that is present only where given (fused ops' act_* attributes)
OPTIONAL = object()
# any dimension past this is a typo or a runaway expression, not a network
MAX_DIM = 1 << 24

FRESH = "fresh"  # the result is a new tensor nothing else holds
ALIASING = "aliasing"  # the result may be an input, or a view of one


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


def describe(v: Any) -> str:
    """Show a spec value the way it is written in .arch text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "x".join(str(d) for d in v)
    return str(v)


# --- attribute kinds: a checker returns the normalised value or raises OpProblem ----------------
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


def float_in(lo: float, hi: float) -> Callable[[Any, str], float]:
    """A checker for a number in [lo, hi]."""

    def check(v: Any, name: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise OpProblem(f"'{name}' must be a number, got {describe(v)}", attr=name)
        if not lo <= v <= hi:
            raise OpProblem(f"'{name}' must be in [{lo}, {hi}], got {v}", attr=name)
        return float(v)

    return check


def choice(*allowed: str) -> Callable[[Any, str], str]:
    """A checker for one of a few symbols."""

    def check(v: Any, name: str) -> str:
        if not isinstance(v, str) or v not in allowed:
            raise OpProblem(f"'{name}' must be one of {', '.join(allowed)}, got {describe(v)}", attr=name)
        return str(v)

    check.allowed = allowed  # type: ignore[attr-defined]  # the symbols a spec may write (symbol_values)
    return check


def _name(v: Any, name: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise OpProblem(f"'{name}' must be a name, got {describe(v)}", attr=name)


# Attribute kinds by name; an op may also give a checker function directly.
KINDS: dict[str, Callable[[Any, str], Any]] = {
    "pos_int": _pos_int,
    "bool": _bool,
    "kernel": lambda v, n: _pair(v, n, 1),
    "stride": lambda v, n: _pair(v, n, 1),
    "padding": lambda v, n: _pair(v, n, 0),
    "dilation": lambda v, n: _pair(v, n, 1),
    "eps": float_in(0.0, 1.0),
    "momentum": float_in(0.0, 1.0),
    "act": choice("none", "relu"),
    "name": _name,
}


def _zero(a: Attrs, ins: list[Shape], out: Shape) -> int:
    return 0


@dataclass(frozen=True, kw_only=True)
class OpSpec:
    """Everything the compiler knows about one IR op.

    Attributes:
        name: the op's name: the same word in specs, the IR, and every backend's lowering method.
        arity: input count, or a tuple of every allowed count; `(2, ...)` is two or more.
        attrs: attribute name -> (kind in KINDS or a checker function, default); REQUIRED has no default,
            OPTIONAL leaves the attribute out unless given, None is derived (see `derive`).
        positional: the attributes a spec may give without a keyword, in order.
        shape: the shape rule on resolved attributes: (attrs, input shapes) -> output shape; pure.
        derive: fills derived attributes (e.g. "same" padding) from the input shapes; returns a new dict.
        params: learnable parameters for one application: (attrs, input shapes, output shape) -> count.
        macs: multiply-adds per image, counted for conv and linear only (the paper's convention).
        label: the picture label in `archc graph` (attrs -> text); the op's name when None.
        doc: one line for listings and the docs check.
        surface: a spec may call it (internal ops made by passes, and `input`, are not).
        result: FRESH (a new tensor) or ALIASING (may return an input or a view of one).
        elementwise: the output has the first input's shape and each element depends on one element
            of each input.
        weighted: a learnable layer with a weight that counts toward depth (conv, linear).
        commutative: a two-input op whose inputs may be swapped.
        branches: takes branch inputs in a spec: `op { ... }` gives the current value plus each
            branch, every branch starting from the scope's input (the residual `add`).
        family: a coarse kind shared by related ops ("conv" for conv and fused_conv, "norm", "pool", ...),
            for consumers that ask "is this a convolution" rather than name ops.
        shortcut_slot: the input slot a residual shortcut arrives in, drawn as a skip edge.
        hints: attribute -> what to do when a REQUIRED attribute is missing.
    """

    name: str
    arity: int | tuple[Any, ...]
    shape: ShapeRule
    attrs: Mapping[str, tuple[str | Callable[[Any, str], Any], Any]] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    derive: Callable[[Attrs, list[Shape]], Attrs] | None = None
    params: CostRule = _zero
    macs: CostRule = _zero
    label: Callable[[Attrs], str] | None = None
    doc: str = ""
    surface: bool = True
    result: str = FRESH
    elementwise: bool = False
    weighted: bool = False
    commutative: bool = False
    branches: bool = False
    family: str = ""
    shortcut_slot: int | None = None
    hints: Mapping[str, str] = field(default_factory=dict)

    def accepts(self, n: int) -> bool:
        """Whether the op takes `n` inputs; an arity tuple ending in `...` means "or more": (2, ...)."""
        arity = self.arity if isinstance(self.arity, tuple) else (self.arity,)
        if arity and arity[-1] is Ellipsis:
            return n >= arity[0]
        return n in arity

    def arity_text(self, offset: int = 0) -> str:
        """The allowed input counts (plus `offset`) in words: "1", "1 or 2", "1 or more"."""
        arity = self.arity if isinstance(self.arity, tuple) else (self.arity,)
        if arity and arity[-1] is Ellipsis:
            return f"{arity[0] + offset} or more"
        return " or ".join(str(n + offset) for n in arity)

    def check_attrs(self, given: Mapping[str, Any]) -> Attrs:
        """Validate and normalise attributes; defaults fill the rest (None = derived).

        Raises:
            OpProblem: an unknown, missing or ill-typed attribute.
        """
        out: Attrs = {}
        for key, value in given.items():
            if key not in self.attrs:
                raise OpProblem(f"'{self.name}' has no parameter '{key}'", attr=key)
            kind = self.attrs[key][0]
            out[key] = (KINDS[kind] if isinstance(kind, str) else kind)(value, key)
        for key, (_, default) in self.attrs.items():
            if key in out or default is OPTIONAL:
                continue
            if default is REQUIRED:
                raise OpProblem(f"'{self.name}' needs '{key}'", hint=self.hints.get(key))
            out[key] = default
        return out

    def resolve(self, attrs: Mapping[str, Any], ins: list[Shape]) -> Attrs:
        """The attributes with derived values filled in for these inputs; `attrs` is not changed."""
        return self.derive(dict(attrs), ins) if self.derive is not None else dict(attrs)

    def infer(self, attrs: Mapping[str, Any], ins: list[Shape]) -> Shape:
        """The output shape for these attributes and input shapes (derived attributes filled first).

        Raises:
            OpProblem: the inputs do not fit the op.
        """
        return tuple(self.shape(self.resolve(attrs, ins), ins))

    def text(self, attrs: Mapping[str, Any]) -> str:
        """The picture label of one application."""
        return self.label(dict(attrs)) if self.label is not None else self.name


OPS: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    """Add an op to the registry.

    Raises:
        ValueError: the name is taken, or a positional attribute is not an attribute.
    """
    if spec.name in OPS:
        raise ValueError(f"op {spec.name!r} is already registered")
    bad = [p for p in spec.positional if p not in spec.attrs]
    if bad or spec.result not in (FRESH, ALIASING):
        raise ValueError(f"op {spec.name!r}: bad positional {bad} or result {spec.result!r}")
    OPS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove an op (for tests that register a throwaway op)."""
    OPS.pop(name, None)


def surface_ops() -> tuple[str, ...]:
    """The ops a spec may call by name, in registration order."""
    return tuple(n for n, s in OPS.items() if s.surface)


def symbol_values() -> frozenset[str]:
    """Every symbol an op attribute accepts (`mode=nearest`): specs may write them as bare names."""
    out: set[str] = set()
    for spec in OPS.values():
        for kind, _ in spec.attrs.values():
            check = KINDS[kind] if isinstance(kind, str) else kind
            out |= set(getattr(check, "allowed", ()))
    return frozenset(out)


def infer_node(op: str, attrs: Mapping[str, Any], ins: list[Shape]) -> tuple[Attrs, Shape]:
    """Shape propagation for one node: (resolved attributes, output shape). The single place it happens.

    Raises:
        OpProblem: the inputs do not fit the op.
    """
    spec = OPS[op]
    resolved = spec.resolve(attrs, ins)
    return resolved, tuple(spec.shape(resolved, ins))
