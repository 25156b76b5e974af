"""Values of the language (int, bool, float, dims, symbol) and expression evaluation."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from archc.errors import ArgumentError, Loc, UnknownNameError, did_you_mean
from archc.frontend import ast


class Symbol(str):
    """A bare name used as a value, such as the shortcut options `A`, `B`, `C`, `none`."""

    def __repr__(self) -> str:
        return f"Symbol({str(self)})"


Value = int | bool | float | tuple | Symbol


def type_name(v: Any) -> str:
    """Say what kind of value `v` is, for messages."""
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, tuple):
        return "a shape (like 3x3)"
    if isinstance(v, Symbol):
        return "a name"
    return type(v).__name__


def same_type(value: Any, default: Any) -> bool:
    """True when `value` may stand where `default` was declared (ints pass as floats)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, Symbol):
        return isinstance(value, Symbol)
    return type(value) is type(default)


def _num(v: Any, what: str, loc: Loc, ints_only: bool = False) -> int | float:
    ok = (int,) if ints_only else (int, float)
    if isinstance(v, bool) or not isinstance(v, ok):
        raise ArgumentError(f"{what} needs {'integers' if ints_only else 'numbers'}, got {type_name(v)}", loc)
    return v


def _bool(v: Any, what: str, loc: Loc) -> bool:
    if not isinstance(v, bool):
        raise ArgumentError(
            f"{what} needs true/false, got {type_name(v)}",
            loc,
            hint="compare explicitly, e.g. `stride != 1`",
        )
    return v


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_FUNCS = {"min": min, "max": max}
# results past this are runaway expressions, not network sizes
_MAX_INT = 1 << 62


class Evaluator:
    """Evaluate expressions against an environment of variables.

    Args:
        symbols: names that are symbol values when no variable has that name.
    """

    def __init__(self, symbols: frozenset[str]) -> None:
        self.symbols = symbols

    def eval(self, e: ast.Expr, env: Mapping[str, Value]) -> Value:
        """Evaluate `e`; raises ArchcError (with e's location) on any mistake."""
        t = type(e)
        if t is ast.Int or t is ast.Float or t is ast.Bool or t is ast.Dims:
            return e.value  # type: ignore[union-attr]
        if t is ast.Name:
            return self._name(e, env)  # type: ignore[arg-type]
        if t is ast.BinOp:
            a = _num(self.eval(e.left, env), f"'{e.op}'", e.loc, e.op in ("//", "%"))
            b = _num(self.eval(e.right, env), f"'{e.op}'", e.loc, e.op in ("//", "%"))
            if e.op in ("//", "%") and b == 0:
                raise ArgumentError("division by zero", e.loc)
            r = _ARITH[e.op](a, b)
            if isinstance(r, int) and abs(r) > _MAX_INT:
                raise ArgumentError("integer too large", e.loc)
            return r
        if t is ast.Compare:
            a, b = self.eval(e.left, env), self.eval(e.right, env)
            if e.op in ("==", "!="):
                if not (same_type(a, b) or same_type(b, a)):
                    raise ArgumentError(
                        f"'{e.op}' compares {type_name(a)} with {type_name(b)}; that is never equal",
                        e.loc,
                    )
            else:
                _num(a, f"'{e.op}'", e.loc)
                _num(b, f"'{e.op}'", e.loc)
            return _COMPARE[e.op](a, b)
        if t is ast.BoolOp:
            a = _bool(self.eval(e.left, env), f"'{e.op}'", e.loc)
            if (e.op == "and" and not a) or (e.op == "or" and a):
                return a
            return _bool(self.eval(e.right, env), f"'{e.op}'", e.loc)
        if t is ast.Cond:
            test = _bool(self.eval(e.test, env), "'if'", e.test.loc)
            return self.eval(e.then if test else e.orelse, env)
        if t is ast.Neg:
            return -_num(self.eval(e.operand, env), "'-'", e.loc)
        if t is ast.Not:
            return not _bool(self.eval(e.operand, env), "'not'", e.loc)
        if t is ast.Func:
            fn = _FUNCS.get(e.name)
            if fn is None:
                raise UnknownNameError(
                    f"unknown function '{e.name}'",
                    e.loc,
                    hint=did_you_mean(e.name, _FUNCS) or f"functions: {', '.join(_FUNCS)}",
                )
            if not e.args:
                raise ArgumentError(f"'{e.name}' needs at least one argument", e.loc)
            return fn(_num(self.eval(a, env), f"'{e.name}'", a.loc) for a in e.args)
        raise AssertionError(f"unknown expression {e!r}")

    def _name(self, e: ast.Name, env: Mapping[str, Value]) -> Value:
        if e.id in env:
            return env[e.id]
        if e.id in self.symbols:
            return Symbol(e.id)
        raise UnknownNameError(
            f"unknown name '{e.id}'",
            e.loc,
            hint=did_you_mean(e.id, list(env) + sorted(self.symbols))
            or f"variables here: {', '.join(sorted(env)) or 'none'}",
        )


_LITERAL = re.compile(
    r"^(?:(?P<dims>\d+(?:x\d+)+)|(?P<int>-?\d+)"
    r"|(?P<float>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+))"
    r"|(?P<bool>true|false)|(?P<name>[A-Za-z_][A-Za-z_0-9]*))$"
)


def parse_value(text: str) -> Value | None:
    """Read a `--set` value: 3, 1e-5, true, 3x224x224 or a symbol; None if it is none of these."""
    m = _LITERAL.match(text.strip())
    if m is None:
        return None
    if m["dims"]:
        return tuple(int(d) for d in m["dims"].split("x"))
    if m["int"]:
        return int(m["int"])
    if m["float"]:
        return float(m["float"])
    if m["bool"]:
        return m["bool"] == "true"
    return Symbol(m["name"])
