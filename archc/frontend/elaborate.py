"""Elaborate a Program into the graph IR: bind arguments, expand blocks and repeats, infer shapes.

Every tensor has a known shape as soon as it is created, so shape mistakes are reported
at the statement that makes them, before any tensor exists. Statements are dispatched by
AST class (STATEMENTS); argument binding lives in binding.py, scopes and names in scopes.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
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
from archc.frontend.binding import Callee, bind_args, block_env, block_signature, layer_signature, net_env
from archc.frontend.loader import BUILTIN_VARIABLES, Program
from archc.frontend.parser import KEYWORDS, body_labels
from archc.frontend.scopes import Namespace, Scope, label_text, warn_unread
from archc.frontend.values import Evaluator, Value, type_name
from archc.ir import OPS, Graph, OpProblem, infer_node, surface_ops
from archc.ir.registry import MAX_DIM, describe

MAX_NODES = 100_000
MAX_REPEAT = 1_000_000
MAX_CALL_DEPTH = 200
# block calls plus repeat iterations allowed per graph node of the bound (empty bodies emit no nodes)
STEPS_PER_NODE = 1


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
        # what a layer (by op name) or a block (by id) binds against, with its usage hint: made once
        self._callees: dict[str | int, Callee] = {}
        self.budget = limits.Budget(limits.current(), max_nodes, STEPS_PER_NODE)
        self.outputs: dict[str, tuple[str, Loc]] = {}
        self.cut: dict | None = None
        self._unread: dict[str, tuple[str, Loc, bool]] = {}  # per `-> name`: was it ever read
        self.statements: dict[type, Callable[[Any, Scope], None]] = {
            ast.Call: self._call,
            ast.Repeat: self._repeat,
            ast.Group: self._group,
            ast.If: self._if,
            ast.Output: self._output,
            ast.Cut: self._cut,
            ast.Bind: self._bind,
            ast.From: self._from,
            ast.Input: self._input_again,
        }

    # --- entry
    def run(self, overrides: Mapping[str, Any] | None = None) -> Graph:
        """Elaborate the net with `overrides` applied to its parameters.

        Raises:
            ArchcError: any mistake in the spec or the overrides.
        """
        net = self.program.net
        env = net_env(net, overrides or {}, self.ev, self.program.symbols)
        ns = Namespace("", set(self._labels(net.body)))
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
        self.budget.account(node, first.loc)
        self.cur = node.name
        ns.used["input"] = first.loc
        scope = Scope(ns, dict(env), self.cur)
        self.net_scope = scope
        self._bind_input(scope.env)
        try:
            self._body(stmts[1:], scope)
        except RecursionError:
            raise LimitError(
                "the spec nests blocks too deeply",
                net.loc,
                hint=f"keep block calls under {MAX_CALL_DEPTH} deep",
            ) from None
        scope.close(self._unread)
        warn_unread(self._unread)
        outs = self.outputs
        if self.cut is not None and outs and self.cur not in [node for node, _ in outs.values()]:
            # the head's result must stay an output, or nothing after the cut would survive
            if "head" in outs:
                raise ArgumentError("in a net with a `cut`, the last value is the output 'head'", outs["head"][1])
            outs["head"] = (self.cur, net.loc)
        if outs:
            self.graph.outputs = [node for node, _ in outs.values()]
            self.graph.output_names = list(outs)
        else:
            self.graph.outputs = [self.cur]
        self.graph.meta = {"params": {k: describe(v) for k, v in sorted(env.items())}}
        if self.cut is not None:
            self.graph.meta["cut"] = self.cut
        return self.graph

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

    def _body(self, stmts: list[ast.Stmt] | tuple[ast.Stmt, ...], scope: Scope) -> None:
        for s in stmts:
            self.statements[type(s)](s, scope)

    def _input_again(self, s: ast.Input, scope: Scope) -> None:
        raise ArgumentError(
            "`input` may appear only once, at the start of a net",
            s.loc,
            hint="blocks take the shape of whatever they are applied to",
        )

    def _output(self, s: ast.Output, scope: Scope) -> None:
        local = label_text(s.name, self.ev, scope.env)
        assert local is not None
        if local in KEYWORDS:
            raise UnknownNameError(f"'{local}' is a keyword and cannot name an output", s.name_loc)
        name = scope.ns.prefix + local  # an output inside a block or repeat is named by its path
        if name in self.outputs:
            raise ArgumentError(
                f"output '{name}' is named twice",
                s.name_loc,
                hint='give every output its own name (a computed one in a repeat, e.g. output "p{i}")',
                notes=[f"first named at {self.outputs[name][1]}"],
            )
        self.outputs[name] = (self.cur, s.loc)

    def _cut(self, s: ast.Cut, scope: Scope) -> None:
        if scope is not self.net_scope:
            raise ArgumentError(
                "`cut` may appear only in a net's own body, not inside blocks or repeats",
                s.loc,
                hint="move the `cut` statement to the net, after the layer it refers to",
            )
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

    def _bind(self, s: ast.Bind, scope: Scope) -> None:
        if s.name in KEYWORDS:
            raise UnknownNameError(f"'{s.name}' is a keyword and cannot name a value", s.loc)
        scope.bind(s.name, self.cur, s.loc)

    def _from(self, s: ast.From, scope: Scope) -> None:
        self.cur = scope.lookup(s.name, s.loc)

    def _if(self, s: ast.If, scope: Scope) -> None:
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
        self.budget.account(node, loc)
        self.cur = node.name

    def _step(self, loc: Loc) -> None:
        """Count a block call or repeat iteration (see limits.Budget.step)."""
        self.budget.step(loc)

    def _child(self, s: ast.Call | ast.Repeat | ast.Group, scope: Scope, op: str, labels: frozenset[str]) -> Namespace:
        """The namespace of a labelled call or group one level below `scope`."""
        local = scope.ns.take(label_text(s.label, self.ev, scope.env), op, s.label_loc or s.loc)
        return Namespace(scope.ns.prefix + local + ".", set(labels))

    def _repeat(self, s: ast.Repeat, scope: Scope) -> None:
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
        group = self._child(s, scope, "repeat", frozenset()) if s.label is not None else scope.ns
        labels = self._labels(s.body)
        for i in range(n):
            self._step(s.count.loc)
            before = len(self.graph)
            env = dict(scope.env)
            if s.var is not None:
                env[s.var] = i
            try:
                name = str(i) if s.named is None else label_text(s.named, self.ev, env)
                local = group.take(name, "repeat", s.loc if s.named is None else s.named.loc)
            except UnknownNameError as e:
                if s.label is None and s.named is None:  # the user never wrote this name: say where it comes from
                    e.hint = "an unlabelled repeat names its iterations 0, 1, ...; label it, e.g. `stage: repeat ...`"
                raise
            self._bind_input(env)
            inner = Scope(Namespace(group.prefix + local + ".", set(labels)), env, self.cur, outer=scope)
            self._body(s.body, inner)
            inner.close(self._unread)
            per = len(self.graph) - before
            if i == 0 and per * n + before > self.max_nodes:
                raise LimitError(
                    f"this repeat would expand to about {per * n} graph nodes, past the limit of {self.max_nodes}",
                    s.count.loc,
                    hint="check the repeat count",
                )

    def _group(self, s: ast.Group, scope: Scope) -> None:
        inner = Scope(self._child(s, scope, "group", self._labels(s.body)), scope.env, self.cur, outer=scope)
        self._body(s.body, inner)
        inner.close(self._unread)

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

    def _call(self, s: ast.Call, scope: Scope) -> None:
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

    def _branches(self, s: ast.Call, scope: Scope) -> tuple[str, ...]:
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
        if not spec.accepts(len(ends)):
            raise ArgumentError(
                f"'{s.name}' takes {spec.arity_text(-1)} branch(es) in braces, got {len(ends) - 1}",
                s.loc,
                hint=layer_signature(s.name),
            )
        return tuple(ends)

    def _layer(self, s: ast.Call, scope: Scope) -> None:
        spec = OPS[s.name]
        callee = self._callees.get(s.name)
        if callee is None:
            callee = Callee(f"'{s.name}'", list(spec.attrs), spec.positional, True, layer_signature(s.name))
            self._callees[s.name] = callee
        sig = callee.signature
        given, where = bind_args(callee, s.args, lambda e: self.ev.eval(e, scope.env))
        try:
            attrs = spec.check_attrs(given)
        except OpProblem as p:
            raise ArgumentError(p.message, where.get(p.attr or "", s.loc), hint=p.hint or sig) from None
        inputs = self._branches(s, scope)
        label = label_text(s.label, self.ev, scope.env)
        name = scope.ns.prefix + scope.ns.take(label, s.name, s.label_loc or s.loc)
        self._emit(s.name, name, inputs, attrs, s.loc, s.label is not None)

    def _block(self, s: ast.Call, scope: Scope, block: ast.Block) -> None:
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
        callee = self._callees.get(id(block))
        if callee is None:
            params = [p.name for p in block.params]
            callee = Callee(f"block '{block.name}'", params, params, False, block_signature(block))
            self._callees[id(block)] = callee
        given, where = bind_args(callee, s.args, lambda e: self.ev.eval(e, scope.env))
        env = block_env(block, given, where, s.loc, self.ev, callee.signature)
        self._bind_input(env)
        if s.label is not None:
            ns = self._child(s, scope, s.name, self._labels(block.body))
        else:
            # an unlabelled call is transparent: its layers join the caller's names
            ns = scope.ns
            ns.labels |= self._labels(block.body)
        self.stack.append(block.name)
        inner = Scope(ns, env, self.cur)  # a block sees only the values it names itself
        try:
            self._body(block.body, inner)
            inner.close(self._unread)
        except ArchcError as e:
            where_ = ns.prefix.rstrip(".") or "the net"
            e.notes.append(f"in block '{block.name}' called at {s.loc} (as {where_})")
            raise
        finally:
            self.stack.pop()


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
