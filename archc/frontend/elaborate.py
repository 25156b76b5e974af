"""Elaborate a Program into the graph IR: bind arguments, expand blocks and repeats, infer shapes.

Every tensor has a known shape as soon as it is created, so shape mistakes are reported
at the statement that makes them, before any tensor exists.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from archc.errors import (
    ArchcError,
    ArgumentError,
    LimitError,
    Loc,
    RecursiveBlockError,
    ShapeError,
    UnknownNameError,
    did_you_mean,
)
from archc.frontend import ast, limits
from archc.frontend.loader import BUILTIN_VARIABLES, Program
from archc.frontend.parser import KEYWORDS, body_labels
from archc.frontend.values import Evaluator, Symbol, Value, parse_value, same_type, type_name
from archc.ir import OPS, Graph, Node, OpProblem, infer_node, surface_ops
from archc.ir.registry import MAX_DIM, REQUIRED, describe

MAX_NODES = 100_000
MAX_REPEAT = 1_000_000
MAX_CALL_DEPTH = 200
# block calls plus repeat iterations allowed per graph node of the bound (empty bodies emit no nodes)
STEPS_PER_NODE = 1


@dataclass
class _Namespace:
    """The names taken under one module path (e.g. `layer1.0.`)."""

    prefix: str
    labels: set[str]
    used: dict[str, Loc | None] = field(default_factory=dict)

    def take(self, label: str | None, op: str, loc: Loc) -> str:
        """Reserve a local name: the label, or `op`, `op_1`, ... avoiding every label."""
        if label is not None:
            if label in self.used:
                first = self.used[label]
                raise UnknownNameError(
                    f"duplicate layer name '{self.prefix}{label}'",
                    loc,
                    notes=[f"first used at {first}"] if first else [],
                    hint="names become module names and must be unique within a block; rename one",
                )
            self.used[label] = loc
            return label
        name, k = op, 0
        while name in self.used or name in self.labels:
            k += 1
            name = f"{op}_{k}"
        self.used[name] = None
        return name


@dataclass
class _Scope:
    ns: _Namespace
    env: dict[str, Value]
    input: str  # where branches start (the tensor `add` adds back): the block's / iteration's input


class Elaborator:
    """Turn a Program into a Graph.

    Args:
        program: the loaded spec.
        max_nodes: refuse specs that expand past this many graph nodes.
    """

    def __init__(self, program: Program, max_nodes: int = MAX_NODES) -> None:
        self.program = program
        self.max_nodes = max_nodes
        self.ev = Evaluator(program.symbols)
        self.graph = Graph(program.net.name)
        self.cur = ""
        self.stack: list[str] = []
        self._locs: dict[int, str] = {}
        self._label_cache: dict[int, frozenset[str]] = {}
        self.steps = 0
        self.limits = limits.current()
        self.total_params = 0
        self.total_values = 0  # of one image's forward, the input included

    # --- entry
    def run(self, overrides: Mapping[str, Any] | None = None) -> Graph:
        """Elaborate the net with `overrides` applied to its parameters.

        Raises:
            ArchcError: any mistake in the spec or the overrides.
        """
        net = self.program.net
        env = self._net_env(net, overrides or {})
        ns = _Namespace("", set(self._labels(net.body)))
        stmts = list(net.body)
        # nothing may come before `input` (an `if` there used to be skipped silently)
        first = stmts[0] if stmts else None
        if not isinstance(first, ast.Input):
            raise ArgumentError(
                f"net '{net.name}' must start with its input shape",
                net.loc if first is None else first.loc,
                hint="begin the net with e.g. `input 3x224x224`",
            )
        shape = self._input_shape(first, env)
        node = self.graph.add_node("input", "input", (), {"shape": shape}, shape, loc=self._loc(first.loc))
        self._account(node, first.loc)
        self.cur = node.name
        ns.used["input"] = first.loc
        scope = _Scope(ns, dict(env), self.cur)
        self.net_scope = scope
        self.taps: dict[str, tuple[str, Loc]] = {}
        self.cut: dict | None = None
        self._bind_input(scope.env)
        try:
            self._body(stmts[stmts.index(first) + 1 :], scope)
        except RecursionError:
            raise LimitError(
                "the spec nests blocks too deeply",
                net.loc,
                hint=f"keep block calls under {MAX_CALL_DEPTH} deep",
            ) from None
        if self.cut is not None and self.taps and self.cur not in [node for node, _ in self.taps.values()]:
            # the head's result must stay an output, or nothing after the cut would survive
            if "head" in self.taps:
                raise ArgumentError("in a net with a `cut`, the last value is the output 'head'", self.taps["head"][1])
            self.taps["head"] = (self.cur, net.loc)
        if self.taps:
            self.graph.outputs = [node for node, _ in self.taps.values()]
            self.graph.output_names = list(self.taps)
        else:
            self.graph.outputs = [self.cur]
        self.graph.meta = {"params": {k: describe(v) for k, v in sorted(env.items())}}
        if self.cut is not None:
            self.graph.meta["cut"] = self.cut
        return self.graph

    def _net_env(self, net: ast.Net, overrides: Mapping[str, Any]) -> dict[str, Value]:
        env: dict[str, Value] = {}
        for p in net.params:
            if p.default is None:
                raise ArgumentError(
                    f"net parameter '{p.name}' has no default",
                    p.loc,
                    hint="every net parameter needs a default; `--set` changes it",
                )
            env[p.name] = self.ev.eval(p.default, {})
        for key, raw in overrides.items():
            if key not in env:
                raise UnknownNameError(
                    f"net '{net.name}' has no parameter '{key}' (from --set)",
                    net.loc,
                    hint=did_you_mean(key, env) or f"its parameters: {', '.join(env) or 'none'}",
                )
            value = parse_value(raw) if isinstance(raw, str) else raw
            if isinstance(value, Symbol) and value not in self.program.symbols:
                raise UnknownNameError(
                    f"--set {key}={raw}: unknown value '{value}'",
                    net.loc,
                    hint=did_you_mean(value, self.program.symbols)
                    or f"known names: {', '.join(sorted(self.program.symbols))}",
                )
            if value is None or not same_type(value, env[key]):
                raise ArgumentError(
                    f"--set {key}={raw}: expected {type_name(env[key])} like its default {describe(env[key])}",
                    net.loc,
                )
            env[key] = value
        return env

    def _input_shape(self, stmt: ast.Input, env: dict[str, Value]) -> tuple[int, ...]:
        v = self.ev.eval(stmt.shape, env)
        shape = (v,) if isinstance(v, int) and not isinstance(v, bool) else v
        if not isinstance(shape, tuple) or len(shape) not in (1, 3) or min(shape) < 1 or max(shape) > MAX_DIM:
            raise ArgumentError(
                f"input shape must be CxHxW (or a feature count), got {describe(v)}",
                stmt.shape.loc,
                hint="e.g. `input 3x224x224`",
            )
        return shape

    # --- statements
    def _loc(self, loc: Loc) -> str:
        key = id(loc.source)
        rel = self._locs.get(key)
        if rel is None:
            path = loc.source.path
            rel = path if path.startswith("<") else os.path.relpath(os.path.realpath(path), self.program.root)
            self._locs[key] = rel
        return f"{rel}:{loc.line}:{loc.col}"

    def _body(self, stmts: list[ast.Stmt] | tuple[ast.Stmt, ...], scope: _Scope) -> None:
        for s in stmts:
            t = type(s)
            if t is ast.Call:
                self._call(s, scope)
            elif t is ast.Repeat:
                self._repeat(s, scope)
            elif t is ast.If:
                self._if(s, scope)
            elif t is ast.Output:
                self._output(s, scope)
            elif t is ast.Cut:
                self._cut(s, scope)
            else:
                raise ArgumentError(
                    "`input` may appear only once, at the start of a net",
                    s.loc,
                    hint="blocks take the shape of whatever they are applied to",
                )

    def _top_level_only(self, what: str, loc: Loc, scope: _Scope) -> None:
        if scope is not self.net_scope:
            raise ArgumentError(
                f"`{what}` may appear only in a net's own body, not inside blocks or repeats",
                loc,
                hint=f"move the `{what}` statement to the net, after the layer it refers to",
            )

    def _output(self, s: ast.Output, scope: _Scope) -> None:
        self._top_level_only("output", s.loc, scope)
        if s.name in self.taps:
            raise ArgumentError(
                f"output '{s.name}' is named twice",
                s.name_loc,
                hint="give every output its own name",
                notes=[f"first named at {self.taps[s.name][1]}"],
            )
        if s.name in KEYWORDS:
            raise UnknownNameError(f"'{s.name}' is a keyword and cannot name an output", s.name_loc)
        self.taps[s.name] = (self.cur, s.loc)

    def _cut(self, s: ast.Cut, scope: _Scope) -> None:
        self._top_level_only("cut", s.loc, scope)
        if self.cut is not None:
            raise ArgumentError("a net has at most one `cut`", s.loc, notes=[f"the first is at {self.cut['loc']}"])
        v = self.ev.eval(s.size, scope.env)
        if not (isinstance(v, tuple) and len(v) == 2 and min(v) >= 1):
            raise ArgumentError(
                f"`cut` needs the head's input size as HxW, got {describe(v)}",
                s.size.loc,
                hint="e.g. `cut 14x14`: RoI features of 14x14 enter the head",
            )
        if len(self.graph.node(self.cur).shape) != 3:
            raise ShapeError("`cut` must come where the value is a CxHxW map", s.loc)
        self.cut = {"node": self.cur, "size": list(v), "loc": str(s.loc)}

    def _if(self, s: ast.If, scope: _Scope) -> None:
        for test, body in s.branches:
            if test is None:
                self._body(body, scope)
                return
            v = self.ev.eval(test, scope.env)
            if not isinstance(v, bool):
                raise ArgumentError(
                    f"'if' needs true/false, got {type_name(v)}", test.loc, hint="e.g. `if stride != 1`"
                )
            if v:
                self._body(body, scope)
                return

    def _emit(self, op: str, name: str, inputs: tuple[str, ...], attrs: dict, loc: Loc, labelled: bool) -> None:
        if len(self.graph) >= self.max_nodes:
            raise LimitError(
                f"the spec expands past {self.max_nodes} graph nodes",
                loc,
                hint="check repeat counts; a network this large is almost surely a typo",
            )
        try:
            attrs, shape = infer_node(op, attrs, [self.graph.node(i).shape for i in inputs])
        except OpProblem as p:
            raise ShapeError(p.message, loc, hint=p.hint) from None
        node = self.graph.add_node(name, op, inputs, attrs, shape, loc=self._loc(loc), labelled=labelled)
        self._account(node, loc)
        self.cur = node.name

    def _account(self, node: Node, loc: Loc) -> None:
        """Add a new node's parameters and output to the totals; refuse a net past the size limits."""
        self.total_params += node.params
        if self.total_params > self.limits.params:
            raise limits.refuse(
                "the net's parameters reach",
                self.total_params,
                self.limits.params,
                "",
                limits.ENV_PARAMS,
                loc,
                "check the channel and class counts (and --set values)",
                notes=[f"this {node.op} alone has {node.params:,} parameters"],
            )
        values = math.prod(node.shape)
        self.total_values += values
        total = self.total_values * limits.BYTES_PER_VALUE
        if total > self.limits.activation_bytes:
            what = "the input" if node.op == "input" else f"the output of this {node.op},"
            raise limits.refuse(
                "one image's float32 activations reach",
                total,
                self.limits.activation_bytes,
                "bytes",
                limits.ENV_ACTIVATION_BYTES,
                loc,
                "check the input size and channel counts (and --set values)",
                notes=[f"{what} {describe(node.shape)} alone is {values * limits.BYTES_PER_VALUE:,} bytes"],
            )

    def _step(self, loc: Loc) -> None:
        """Count a block call or repeat iteration; refuse runaway expansion that emits no nodes."""
        self.steps += 1
        limit = STEPS_PER_NODE * self.max_nodes + 1000
        if self.steps > limit:
            raise LimitError(
                f"the spec expands past {limit} block calls and repeat iterations",
                loc,
                hint="check repeat counts and blocks that call other blocks many times",
            )

    def _repeat(self, s: ast.Repeat, scope: _Scope) -> None:
        n = self.ev.eval(s.count, scope.env)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ArgumentError(f"repeat count must be an integer >= 0, got {describe(n)}", s.count.loc)
        if n > MAX_REPEAT or n > self.max_nodes:
            raise LimitError(
                f"repeat count {n} is past the limit of {min(MAX_REPEAT, self.max_nodes)}",
                s.count.loc,
                hint="a network this deep is almost surely a typo",
            )
        if s.var in KEYWORDS:
            raise UnknownNameError(f"'{s.var}' is a keyword and cannot count a repeat", s.loc)
        if s.var in BUILTIN_VARIABLES:
            raise UnknownNameError(
                f"'{s.var}' is a built-in variable and cannot count a repeat",
                s.loc,
                hint="use another name, e.g. `repeat n as i`",
            )
        if s.label is not None:
            group = _Namespace(scope.ns.prefix + scope.ns.take(s.label, "repeat", s.label_loc or s.loc) + ".", set())
        else:
            group = scope.ns
        labels = self._labels(s.body)
        for i in range(n):
            self._step(s.count.loc)
            before = len(self.graph)
            try:
                local = group.take(str(i), "repeat", s.loc)
            except UnknownNameError as e:
                if s.label is None:  # the user never wrote this name: say where it comes from
                    e.hint = "an unlabelled repeat names its iterations 0, 1, ...; label it, e.g. `stage: repeat ...`"
                raise
            env = dict(scope.env)
            if s.var is not None:
                env[s.var] = i
            self._bind_input(env)
            self._body(s.body, _Scope(_Namespace(group.prefix + local + ".", labels), env, self.cur))
            per = len(self.graph) - before
            if i == 0 and per * n + before > self.max_nodes:
                raise LimitError(
                    f"this repeat would expand to about {per * n} graph nodes, past the limit of {self.max_nodes}",
                    s.count.loc,
                    hint="check the repeat count",
                )

    def _labels(self, body: tuple[ast.Stmt, ...]) -> frozenset[str]:
        """Labels a body puts in its namespace, including those of blocks it calls unlabelled.

        Auto-names must avoid all of them, also the ones a later transparent call brings.
        """
        key = id(body)
        if key not in self._label_cache:
            self._label_cache[key] = frozenset()  # a recursive block: its own labels are enough
            out = set(body_labels(body))
            for call in _unlabelled_calls(body):
                block = self.program.blocks.get(call.name)
                if block is not None:
                    out |= self._labels(block.body)
            self._label_cache[key] = frozenset(out)
        return self._label_cache[key]

    def _bind_input(self, env: dict[str, Value]) -> None:
        shape = self.graph.node(self.cur).shape
        if len(shape) == 3:
            env["in_channels"], env["in_height"], env["in_width"] = shape
        else:
            env["in_features"] = shape[0]

    def _call(self, s: ast.Call, scope: _Scope) -> None:
        spec = OPS.get(s.name)
        if spec is not None and spec.surface:
            self._layer(s, scope)
        elif s.name in self.program.blocks:
            if s.branches:
                raise ArgumentError(
                    f"block '{s.name}' takes no branches in braces",
                    s.loc,
                    hint="only ops with branch inputs (like `add`) take `{ ... }` after the call",
                )
            self._block(s, scope, self.program.blocks[s.name])
        else:
            layers = surface_ops()
            raise UnknownNameError(
                f"unknown layer or block '{s.name}'",
                s.loc,
                hint=did_you_mean(s.name, list(layers) + list(self.program.blocks))
                or f"layers: {', '.join(layers)}; blocks come from `use`d files",
            )

    def _branches(self, s: ast.Call, scope: _Scope) -> tuple[str, ...]:
        """The inputs of a call: the current value, then (for ops with branch inputs) each branch's result.

        Every branch starts from the scope's input; an op with branch inputs and no braces has one
        empty branch, so a bare `add` adds the scope's input back.
        """
        spec = OPS[s.name]
        main = self.cur
        if not spec.branches:
            if s.branches:
                raise ArgumentError(
                    f"'{s.name}' takes no branches in braces",
                    s.loc,
                    hint="only ops with branch inputs (like `add`) take `{ ... }` after the call",
                )
            return (main,)
        ends = [main]
        for branch in s.branches or ((),):
            self.cur = scope.input
            self._body(branch, scope)
            ends.append(self.cur)
        if len(ends) not in spec.arities:
            want = " or ".join(str(n - 1) for n in spec.arities)
            raise ArgumentError(
                f"'{s.name}' takes {want} branch(es) in braces, got {len(ends) - 1}",
                s.loc,
                hint=_signature(s.name),
            )
        return tuple(ends)

    def _layer(self, s: ast.Call, scope: _Scope) -> None:
        spec = OPS[s.name]
        given: dict[str, Any] = {}
        where: dict[str, Loc] = {}
        slots = list(spec.positional)
        for arg in s.args:
            v = self.ev.eval(arg.value, scope.env)
            if arg.keyword is not None:
                key = arg.keyword
            elif arg.stride:
                key = "stride"
            elif isinstance(v, tuple) and "kernel" in spec.attrs and "kernel" not in given:
                key = "kernel"
            elif slots:
                key = slots.pop(0)
            else:
                raise ArgumentError(
                    f"too many positional arguments for '{s.name}'",
                    arg.loc,
                    hint=_signature(s.name),
                )
            if key not in spec.attrs:
                raise UnknownNameError(
                    f"'{s.name}' has no parameter '{key}'",
                    arg.loc,
                    hint=did_you_mean(key, spec.attrs) or _signature(s.name),
                )
            if key in given:
                raise ArgumentError(f"'{key}' is given twice", arg.loc, hint=_signature(s.name))
            if key in slots:
                slots.remove(key)
            given[key] = v
            where[key] = arg.loc
        try:
            attrs = spec.check_attrs(given)
        except OpProblem as p:
            raise ArgumentError(p.message, where.get(p.attr or "", s.loc), hint=p.hint or _signature(s.name)) from None
        inputs = self._branches(s, scope)
        name = scope.ns.prefix + scope.ns.take(s.label, s.name, s.label_loc or s.loc)
        self._emit(s.name, name, inputs, attrs, s.loc, s.label is not None)

    def _block(self, s: ast.Call, scope: _Scope, block: ast.Block) -> None:
        if block.name in self.stack:
            chain = " -> ".join(self.stack[self.stack.index(block.name) :] + [block.name])
            raise RecursiveBlockError(
                f"block '{block.name}' calls itself ({chain})",
                s.loc,
                hint="blocks cannot recurse; use `repeat` for repetition",
            )
        if len(self.stack) >= MAX_CALL_DEPTH:
            raise LimitError(
                f"block calls nest more than {MAX_CALL_DEPTH} deep",
                s.loc,
                hint="flatten the block structure",
            )
        self._step(s.loc)
        env = self._bind_args(s, block, scope.env)
        self._bind_input(env)
        if s.label is not None:
            local = scope.ns.take(s.label, s.name, s.label_loc or s.loc)
            ns = _Namespace(scope.ns.prefix + local + ".", set(self._labels(block.body)))
        else:
            # an unlabelled call is transparent: its layers join the caller's names
            ns = scope.ns
            ns.labels |= self._labels(block.body)
        self.stack.append(block.name)
        try:
            self._body(block.body, _Scope(ns, env, self.cur))
        except ArchcError as e:
            where = ns.prefix.rstrip(".") or "the net"
            e.notes.append(f"in block '{block.name}' called at {s.loc} (as {where})")
            raise
        finally:
            self.stack.pop()

    def _bind_args(self, s: ast.Call, block: ast.Block, caller_env: dict[str, Value]) -> dict[str, Value]:
        params = {p.name: p for p in block.params}
        order = [p.name for p in block.params]
        given: dict[str, Value] = {}
        for arg in s.args:
            v = self.ev.eval(arg.value, caller_env)
            if arg.keyword is not None:
                key = arg.keyword
                if key not in params:
                    raise UnknownNameError(
                        f"block '{block.name}' has no parameter '{key}'",
                        arg.loc,
                        hint=did_you_mean(key, params) or _block_signature(block),
                    )
            elif arg.stride:
                if "stride" not in params:
                    raise ArgumentError(f"block '{block.name}' has no 'stride' parameter for '/'", arg.loc)
                key = "stride"
            else:
                free = [n for n in order if n not in given]
                if not free:
                    raise ArgumentError(
                        f"too many arguments for block '{block.name}'",
                        arg.loc,
                        hint=_block_signature(block),
                    )
                key = free[0]
            if key in given:
                raise ArgumentError(f"'{key}' is given twice", arg.loc, hint=_block_signature(block))
            p = params[key]
            if p.default is not None:
                default = self.ev.eval(p.default, {})
                if not same_type(v, default):
                    raise ArgumentError(
                        f"'{key}' of block '{block.name}' expects {type_name(default)} "
                        f"(like its default {describe(default)}), got {type_name(v)} {describe(v)}",
                        arg.loc,
                    )
            given[key] = v
        env: dict[str, Value] = {}
        for p in block.params:
            if p.name in given:
                env[p.name] = given[p.name]
            elif p.default is not None:
                env[p.name] = self.ev.eval(p.default, {})
            else:
                raise ArgumentError(
                    f"block '{block.name}' needs parameter '{p.name}'",
                    s.loc,
                    hint=_block_signature(block),
                )
        return env


def _unlabelled_calls(body: tuple[ast.Stmt, ...]) -> list[ast.Call]:
    """Unlabelled calls whose layers land in this body's namespace (through if and branches, not repeat)."""
    out: list[ast.Call] = []
    for s in body:
        if isinstance(s, ast.Call):
            if s.label is None:
                out.append(s)
            for branch in s.branches:
                out += _unlabelled_calls(branch)
        elif isinstance(s, ast.If):
            for _, branch in s.branches:
                out += _unlabelled_calls(branch)
    return out


def _signature(op: str) -> str:
    spec = OPS[op]
    parts = [k if d is REQUIRED else f"{k}={'auto' if d is None else describe(d)}" for k, (_, d) in spec.attrs.items()]
    return f"usage: {op}({', '.join(parts)})"


def _block_signature(block: ast.Block) -> str:
    params = ", ".join(p.name + ("=..." if p.default is not None else "") for p in block.params)
    return f"block {block.name}({params}) at {block.loc}"


def elaborate(program: Program, overrides: Mapping[str, Any] | None = None, max_nodes: int = MAX_NODES) -> Graph:
    """Elaborate a loaded program into a Graph.

    Args:
        program: from `archc.frontend.load`.
        overrides: net parameter values (strings are read like `--set`).
        max_nodes: the size bound.

    Returns:
        The graph, shapes inferred, ready for `lint()`.

    Raises:
        ArchcError: any mistake, with its location.
    """
    return Elaborator(program, max_nodes).run(overrides)
