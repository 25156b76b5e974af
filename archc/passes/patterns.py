"""Declarative rewrites: a pass is a table of Rules (a Pattern, a `where`, a rewrite) run to a fixed point.

A Pattern is rooted at the consumer, written the way the algebra reads: `relu(add(bn(x), r))` is

    pat("relu", pat("add", pat("bn", name="bn"), ANY("r")), name="relu")

It matches a node by op (one op, a set of ops, or a predicate on the Node), its inputs by sub-patterns
(a wildcard `ANY(name)` takes any input value), and binds named nodes into a Match. Two checks are
built in rather than repeated in every rule:

- every matched node other than the root and the wildcards is swallowed by the rewrite, so its value
  must have the node that reads it in the pattern as its sole user (reading it once) and must not be
  a graph output: no value that something else reads disappears;
- inputs of an op whose registry entry says `commutative` are tried in every order, the written
  order first.

The driver sweeps graph.nodes() (a deterministic topological order), trying the table's rules in
order at each node, and sweeps again until a sweep rewrites nothing: same graph, same result.
A rule looks only at the nodes its pattern reaches (the root, its inputs down to the pattern's
depth, and their users), so a node where nothing fired stays settled until a rewrite changes a
node within that reach above it; later sweeps try only the unsettled nodes, in the same order,
which rewrites exactly what full sweeps would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import permutations

from archc.ir import OPS, Graph, LintError, Node

# a rule table that keeps firing is a compiler bug; every shipped table settles in two sweeps
MAX_SWEEPS = 100


def sole_user(graph: Graph, node: Node) -> Node | None:
    """The one node that reads `node`, or None when it has several users or is an output.

    A user reading the value twice (`add(x, x)`) is two uses.
    """
    users = graph.users(node.name)
    if len(users) != 1 or node.name in graph.outputs:
        return None
    user = graph.node(users[0])
    return user if user.inputs.count(node.name) == 1 else None


@dataclass(frozen=True)
class Pattern:
    """What one node must look like.

    Attributes:
        ops: the op names it may have (empty: any op, when `test` decides or for a wildcard).
        test: a further predicate on the Node, or None.
        inputs: sub-patterns, one per input, or None to leave the inputs unlooked-at.
        name: the Match key the node is bound to, or None.
        wildcard: matches any input value and is never swallowed (see `ANY`).
    """

    ops: frozenset[str] = frozenset()
    test: Callable[[Node], bool] | None = None
    inputs: tuple[Pattern, ...] | None = None
    name: str | None = None
    wildcard: bool = False

    def accepts(self, node: Node) -> bool:
        """The node's own op and predicate fit (its inputs are not looked at)."""
        return (not self.ops or node.op in self.ops) and (self.test is None or self.test(node))

    def depth(self) -> int:
        """How many inputs deep the pattern looks below its root (a wildcard is one input down)."""
        return 1 + max((p.depth() for p in self.inputs), default=0) if self.inputs else 0


def pat(op: str | Iterable[str] | Callable[[Node], bool], *inputs: Pattern, name: str | None = None) -> Pattern:
    """A Pattern: `op` is an op name, a set of op names, or a predicate on the Node.

    Args:
        op: what the node must be.
        inputs: one sub-pattern per input; none given leaves the inputs free.
        name: bind the matched node under this key.

    Returns:
        The Pattern.
    """
    if isinstance(op, str):
        ops, test = frozenset((op,)), None
    elif callable(op):
        ops, test = frozenset(), op
    else:
        ops, test = frozenset(op), None
    return Pattern(ops, test, tuple(inputs) if inputs else None, name)


def ANY(name: str | None = None) -> Pattern:  # noqa: N802  (reads like a constructor in a pattern)
    """A wildcard: any input value, bound (as its producer Node) under `name`."""
    return Pattern(name=name, wildcard=True)


@dataclass
class Match:
    """One way a Pattern fits the graph at a root node.

    Attributes:
        root: the node the pattern's root matched.
        bound: the named nodes (wildcards bind the producer of the value they took).
        swallowed: the matched nodes other than the root and the wildcards, consumers first.
    """

    root: Node
    bound: dict[str, Node] = field(default_factory=dict)
    swallowed: list[Node] = field(default_factory=list)

    def __getitem__(self, name: str) -> Node:
        return self.bound[name]


def _bind(m: Match, p: Pattern, node: Node) -> Match | None:
    if p.name is None:
        return m
    if p.name in m.bound and m.bound[p.name].name != node.name:
        return None  # one name, two different values
    return Match(m.root, {**m.bound, p.name: node}, m.swallowed)


def _match(graph: Graph, p: Pattern, node: Node, parent: Node | None, m: Match) -> Iterator[Match]:
    """Every way `p` fits at `node` (read by `parent`, None at the root), extending `m`."""
    if p.wildcard:
        bound = _bind(m, p, node)
        if bound is not None:
            yield bound
        return
    if not p.accepts(node):
        return
    if parent is not None:
        user = sole_user(graph, node)
        if user is None or user.name != parent.name:
            return
        m = Match(m.root, m.bound, [*m.swallowed, node])
    bound = _bind(m, p, node)
    if bound is None:
        return
    if p.inputs is None:
        yield bound
        return
    if len(p.inputs) != len(node.inputs):
        return
    orders = permutations(p.inputs) if OPS[node.op].commutative else [p.inputs]
    for order in orders:
        yield from _inputs(graph, order, node, bound)


def _inputs(graph: Graph, subs: tuple[Pattern, ...], node: Node, m: Match) -> Iterator[Match]:
    if not subs:
        yield m
        return
    slot = len(node.inputs) - len(subs)
    for first in _match(graph, subs[0], graph.node(node.inputs[slot]), node, m):
        yield from _inputs(graph, subs[1:], node, first)


@dataclass(frozen=True)
class Rule:
    """One rewrite: where `pattern` fits and `where` holds, `rewrite` changes the graph.

    Attributes:
        name: for messages and tests.
        pattern: rooted at the consumer.
        rewrite: (graph, match) -> the node now standing for the root, or None when it does not
            apply (the graph is then untouched). It changes the graph through Graph methods only.
        where: a predicate on the Match, tried before the rewrite.

    `where` and `rewrite` decide from the matched nodes (and the nodes they read and their users),
    never from nodes further away: the driver retries a node only when something within the
    pattern's reach changed.
    """

    name: str
    pattern: Pattern
    rewrite: Callable[[Graph, Match], Node | None]
    where: Callable[[Match], bool] | None = None

    def apply(self, graph: Graph, node: Node) -> Node | None:
        """Rewrite at `node` with the first match the rule accepts; None (graph untouched) when none."""
        for m in _match(graph, self.pattern, node, None, Match(node)):
            if self.where is not None and not self.where(m):
                continue
            out = self.rewrite(graph, m)
            if out is not None:
                return out
        return None


def fuse_into(graph: Graph, m: Match, keep: Node, op: str, inputs: tuple[str, ...], attrs: dict) -> Node:
    """Rewrite `keep` to op(inputs) standing for the match's root, and delete the other matched nodes.

    `keep` keeps its name (so its module and checkpoint keys stay); the root's users read it instead.
    """
    node = graph.rewrite(keep.name, op, inputs, attrs)
    if keep.name != m.root.name:
        graph.replace_all_uses(m.root.name, keep.name)
    for gone in [m.root, *m.swallowed]:
        if gone.name != keep.name:
            graph.remove_node(gone.name)
    return node


def rewrite_fixed_point(graph: Graph, rules: list[Rule]) -> int:
    """Apply `rules` until none fires: each sweep visits graph.nodes() and tries the rules in order.

    A sweep skips the nodes that are settled: tried since the last change within the rules' reach
    (see Rule) with nothing firing. Trying them again could not fire, so the result, and the order
    of the rewrites, is that of full sweeps; the sweep after the last rewrite is not needed when
    every node is settled.

    Args:
        graph: rewritten in place.
        rules: the table; at a node the first rule that rewrites wins.

    Returns:
        The number of rewrites.

    Raises:
        LintError: the table still fires after MAX_SWEEPS sweeps (rules that undo each other).
    """
    reach = max((r.pattern.depth() for r in rules), default=0)
    unsettled = {n.name for n in graph.nodes()}
    total = 0
    with graph.recording() as touched:
        for _ in range(MAX_SWEEPS):
            if not unsettled:
                return total
            fired = 0
            for node in graph.nodes():
                # swallowed by an earlier rewrite in this sweep, or settled
                if node.name not in unsettled or node.name not in graph:
                    continue
                unsettled.discard(node.name)
                node = graph.node(node.name)
                for rule in rules:
                    # the root's own op is the cheapest test, done before any matching starts
                    if rule.pattern.accepts(node) and rule.apply(graph, node) is not None:
                        fired += 1
                        break
                if touched:
                    # a changed node unsettles every node that reaches it within `reach` inputs
                    unsettled |= graph.downstream(touched, reach)
                    touched.clear()
            if not fired:
                return total
            total += fired
    raise LintError(f"rules {[r.name for r in rules]} reach no fixed point in {MAX_SWEEPS} sweeps")
