"""Argument binding for calls: one set of rules for layers (ops) and blocks.

    conv(3x3, 64, /2, bias=true)     block(256, stride=2)

A keyword names its parameter; `/x` is the stride; a shape like `3x3` fills `kernel` when the
callee has one and it is still free (layers); every other positional argument fills the next
free positional parameter. What differs between layers and blocks is only which parameters
are positional and whether a shape goes to `kernel`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from archc.errors import ArgumentError, Loc, UnknownNameError, did_you_mean
from archc.frontend import ast
from archc.frontend.values import Evaluator, Symbol, Value, parse_value, same_type, type_name
from archc.ir.registry import OPS, REQUIRED, describe


@dataclass(frozen=True)
class Callee:
    """What a call binds against.

    Attributes:
        what: how errors name it: "'conv'" or "block 'bottleneck'".
        params: every parameter name, in declaration order.
        positional: the parameters a positional argument may fill, in order.
        kernel_by_shape: a shape value (`3x3`) fills `kernel` while it is free.
        signature: the usage hint shown with binding errors.
    """

    what: str
    params: Sequence[str]
    positional: Sequence[str]
    kernel_by_shape: bool
    signature: str


def bind_args(
    callee: Callee, args: Sequence[ast.Arg], evaluate: Callable[[ast.Expr], Value]
) -> tuple[dict[str, Value], dict[str, Loc]]:
    """Match a call's arguments to the callee's parameters.

    Args:
        callee: the layer or block being called.
        args: the call's arguments, in order.
        evaluate: evaluates an argument's expression in the caller's scope.

    Returns:
        (parameter -> value, parameter -> location of its argument), for the parameters given.

    Raises:
        UnknownNameError: a keyword (or `/`) names no parameter.
        ArgumentError: a parameter is given twice, or there are more positional arguments than slots.
    """
    given: dict[str, Value] = {}
    where: dict[str, Loc] = {}
    for arg in args:
        v = evaluate(arg.value)
        if arg.keyword is not None:
            key = arg.keyword
        elif arg.stride:
            key = "stride"
        elif callee.kernel_by_shape and isinstance(v, tuple) and "kernel" in callee.params and "kernel" not in given:
            key = "kernel"
        else:
            free = [p for p in callee.positional if p not in given]
            if not free:
                raise ArgumentError(f"too many positional arguments for {callee.what}", arg.loc, hint=callee.signature)
            key = free[0]
        if key not in callee.params:
            hint = did_you_mean(key, callee.params) if not arg.stride else None
            raise UnknownNameError(
                f"{callee.what} has no parameter '{key}'" + (" for '/'" if arg.stride else ""),
                arg.loc,
                hint=hint or callee.signature,
            )
        if key in given:
            raise ArgumentError(f"'{key}' is given twice", arg.loc, hint=callee.signature)
        given[key] = v
        where[key] = arg.loc
    return given, where


def block_env(
    block: ast.Block, given: dict[str, Value], where: dict[str, Loc], call_loc: Loc, ev: Evaluator, sig: str
) -> dict[str, Value]:
    """A block's variables for one call: the arguments given (type-checked against the defaults), then defaults.

    Raises:
        ArgumentError: an argument of another type than its parameter's default, or a parameter with no
            default left without an argument.
    """
    env: dict[str, Value] = {}
    for p in block.params:
        default = ev.eval(p.default, {}) if p.default is not None else None
        if p.name in given:
            v = given[p.name]
            if default is not None and not same_type(v, default):
                raise ArgumentError(
                    f"'{p.name}' of block '{block.name}' expects {type_name(default)} "
                    f"(like its default {describe(default)}), got {type_name(v)} {describe(v)}",
                    where[p.name],
                )
            env[p.name] = v
        elif default is not None:
            env[p.name] = default
        else:
            raise ArgumentError(f"block '{block.name}' needs parameter '{p.name}'", call_loc, hint=sig)
    return env


def net_env(net: ast.Net, overrides: Mapping[str, Any], ev: Evaluator, symbols: frozenset[str]) -> dict[str, Value]:
    """A net's variables: its parameters' defaults with `--set` overrides applied.

    Raises:
        ArgumentError: a parameter without a default, or an override of the wrong type.
        UnknownNameError: an override of no parameter, or an unknown symbol value.
    """
    env: dict[str, Value] = {}
    for p in net.params:
        if p.default is None:
            raise ArgumentError(
                f"net parameter '{p.name}' has no default",
                p.loc,
                hint="every net parameter needs a default; `--set` changes it",
            )
        env[p.name] = ev.eval(p.default, {})
    for key, raw in overrides.items():
        if key not in env:
            raise UnknownNameError(
                f"net '{net.name}' has no parameter '{key}' (from --set)",
                net.loc,
                hint=did_you_mean(key, env) or f"its parameters: {', '.join(env) or 'none'}",
            )
        value = parse_value(raw) if isinstance(raw, str) else raw
        if isinstance(value, Symbol) and value not in symbols:
            raise UnknownNameError(
                f"--set {key}={raw}: unknown value '{value}'",
                net.loc,
                hint=did_you_mean(value, symbols) or f"known names: {', '.join(sorted(symbols))}",
            )
        if value is None or not same_type(value, env[key]):
            raise ArgumentError(
                f"--set {key}={raw}: expected {type_name(env[key])} like its default {describe(env[key])}",
                net.loc,
            )
        env[key] = value
    return env


def layer_signature(op: str) -> str:
    """The usage hint of a layer: `usage: conv(out, kernel, stride=1, ...)`."""
    spec = OPS[op]
    parts = [k if d is REQUIRED else f"{k}={'auto' if d is None else describe(d)}" for k, (_, d) in spec.attrs.items()]
    return f"usage: {op}({', '.join(parts)})"


def block_signature(block: ast.Block) -> str:
    """The usage hint of a block: its parameters and where it is defined."""
    params = ", ".join(p.name + ("=..." if p.default is not None else "") for p in block.params)
    return f"block {block.name}({params}) at {block.loc}"
