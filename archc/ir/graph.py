"""The graph IR: named nodes with an op, attributes, ordered inputs and an inferred shape.

Only this package touches networkx; passes, backends and the CLI use Graph methods.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from archc.ir.ops import OPS, Shape, describe
from archc.ir.registry import infer_node

FORMAT = "archc-ir/1"


class LintError(Exception):
    """An internal invariant of the IR is broken (a compiler bug, not a user error)."""


@dataclass
class Node:
    """One op application.

    Attributes:
        name: unique dotted path, e.g. `layer1.0.conv1`; it becomes the module name.
        op: an op in `archc.ir.ops.OPS`.
        inputs: producer node names, in argument order.
        attrs: normalised attributes (see the op spec).
        shape: output shape without the batch dimension.
        loc: `file:line:col` of the spec statement that made the node.
        labelled: the spec gave this layer a name (param-free layers get a module only then).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any]
    shape: Shape
    loc: str | None = None
    labelled: bool = False
    params: int = field(default=0)
    macs: int = field(default=0)

    @property
    def stage(self) -> str:
        """The top-level statement the node belongs to (first part of its name)."""
        return self.name.split(".", 1)[0]


def _json_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


class Graph:
    """A network as a DAG of Nodes over a networkx MultiDiGraph.

    Args:
        name: the net's name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._g = nx.MultiDiGraph()
        # name -> Node, in creation order; the hot lookups skip networkx's node views
        self._nodes: dict[str, Node] = {}
        self._order: dict[str, int] = {}
        self._next = 0
        self.outputs: list[str] = []
        # names of the outputs when the net names several (`output res4`): the module returns a dict
        self.output_names: list[str] = []
        self.meta: dict[str, Any] = {}
        self._sorted: list[Node] | None = None  # topological order, dropped on every mutation
        self._touched: set[str] | None = None  # names whose node or users changed, while recording

    # --- building
    def add_node(
        self,
        name: str,
        op: str,
        inputs: tuple[str, ...] | list[str],
        attrs: dict[str, Any],
        shape: Shape,
        *,
        loc: str | None = None,
        labelled: bool = False,
    ) -> Node:
        """Add a node whose inputs already exist; compute its params and multiply-adds.

        Raises:
            LintError: the name is taken or an input is missing.
        """
        if name in self._nodes:
            raise LintError(f"duplicate node name {name!r}")
        spec = OPS[op]
        ins = [self.node(i).shape for i in inputs]
        if spec.derive is not None:  # derived attributes (auto padding) are filled whoever builds the node
            attrs = spec.resolve(attrs, ins)
        node = Node(name, op, tuple(inputs), attrs, tuple(shape), loc, labelled)
        node.params = spec.params(attrs, ins, node.shape)
        node.macs = spec.macs(attrs, ins, node.shape)
        self._g.add_node(name, node=node)
        for slot, src in enumerate(inputs):
            self._g.add_edge(src, name, key=slot)
        self._nodes[name] = node
        self._order[name] = self._next
        self._next += 1
        self._sorted = None
        self._touch(name, *inputs)
        return node

    def remove_node(self, name: str) -> None:
        """Remove a node that has no users.

        Raises:
            LintError: the node still has users or is an output.
        """
        if self._g._succ[name] or name in self.outputs:
            raise LintError(f"cannot remove {name!r}: it is still used")
        self._touch(name, *self._g._pred[name])
        self._g.remove_node(name)
        del self._nodes[name]
        del self._order[name]
        self._sorted = None

    def rewrite(self, name: str, op: str, inputs: tuple[str, ...] | list[str], attrs: dict[str, Any]) -> Node:
        """Turn node `name` into another op in place (same name, so its module name stays).

        The new op's shape must equal the old one's: users keep reading the same value.

        Raises:
            LintError: an input is missing or the shape would change.
        """
        node = self.node(name)
        spec = OPS[op]
        ins = [self.node(i).shape for i in inputs]
        attrs, shape = infer_node(op, attrs, ins)
        if shape != node.shape:
            raise LintError(f"rewrite of {name!r} changes its shape {node.shape} -> {shape}")
        for src in inputs:
            if src not in self._nodes:
                raise LintError(f"rewrite of {name!r}: no input {src!r}")
        old = list(self._g._pred[name])
        for src, keys in list(self._g._pred[name].items()):
            for key in list(keys):
                self._g.remove_edge(src, name, key=key)
        for slot, src in enumerate(inputs):
            self._g.add_edge(src, name, key=slot)
        self._touch(name, *old, *inputs)
        node.op, node.inputs, node.attrs = op, tuple(inputs), attrs
        node.params = spec.params(attrs, ins, shape)
        node.macs = spec.macs(attrs, ins, shape)
        self._sorted = None
        return node

    def replace_all_uses(self, old: str, new: str) -> None:
        """Make every user of `old` (and the outputs) read `new` instead."""
        users = self.users(old)
        for user in users:
            node = self._nodes[user]
            node.inputs = tuple(new if i == old else i for i in node.inputs)
            for key in list(self._g._succ[old][user]):
                self._g.remove_edge(old, user, key=key)
                self._g.add_edge(new, user, key=key)
        self._sorted = None
        self._touch(old, new, *users)
        self.outputs = [new if o == old else o for o in self.outputs]
        cut = self.meta.get("cut")
        if cut and cut.get("node") == old:
            self.meta["cut"] = {**cut, "node": new}

    def _touch(self, *names: str) -> None:
        if self._touched is not None:
            self._touched.update(names)

    @contextmanager
    def recording(self) -> Iterator[set[str]]:
        """Collect, while the block runs, the names of nodes whose op, attributes, inputs or users change.

        A node added, removed or rewritten is recorded, and so are the producers whose users that
        changes (the inputs before and after) and the users `replace_all_uses` redirects. Changes made
        by assigning to a Node's fields directly are not seen.

        Yields:
            The set of names, filled as the graph changes (removed nodes stay in it).
        """
        outer = self._touched
        touched: set[str] = set()
        self._touched = touched
        try:
            yield touched
        finally:
            self._touched = outer
            if outer is not None:
                outer |= touched

    def downstream(self, names: Iterable[str], depth: int) -> set[str]:
        """The nodes among `names` still in the graph, and every node at most `depth` uses below one."""
        succ = self._g._succ
        seen = {n for n in names if n in self._nodes}
        frontier = list(seen)
        for _ in range(depth):
            nxt = [u for n in frontier for u in succ[n] if u not in seen]
            seen.update(nxt)
            frontier = nxt
        return seen

    # --- queries
    def node(self, name: str) -> Node:
        """Return the node called `name`."""
        return self._nodes[name]

    def index(self, name: str) -> int:
        """When `name` was created, relative to the other nodes (rewrites keep it)."""
        return self._order[name]

    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes())

    def nodes(self) -> list[Node]:
        """All nodes in a deterministic topological order (ties broken by creation order)."""
        if self._sorted is None:
            self._sorted = [self._nodes[n] for n in self._topological()]
        return list(self._sorted)

    def _topological(self) -> list[str]:
        """The topological order that always takes the earliest-created ready node next.

        Raises:
            networkx.NetworkXUnfeasible: the graph has a cycle.
        """
        order, pred = self._order, self._g._pred
        created = list(self._nodes)  # creation order: a dict keeps insertion order
        # usually every edge runs from an older node to a newer one, and creation order is the answer
        if all(order[p] < order[n] for n in created for p in pred[n]):
            return created
        # otherwise Kahn's algorithm with a heap on creation index; an edge per input slot counts
        waiting = {n: sum(len(keys) for keys in pred[n].values()) for n in created}
        ready = [(order[n], n) for n in created if not waiting[n]]
        heapq.heapify(ready)
        out: list[str] = []
        succ = self._g._succ
        while ready:
            _, name = heapq.heappop(ready)
            out.append(name)
            for user, keys in succ[name].items():
                waiting[user] -= len(keys)
                if not waiting[user]:
                    heapq.heappush(ready, (order[user], user))
        if len(out) != len(created):
            raise nx.NetworkXUnfeasible(f"graph {self.name!r} contains a cycle")
        return out

    def users(self, name: str) -> list[str]:
        """Names of the nodes that read `name`, in creation order, without repeats."""
        return sorted(self._g._succ[name], key=self._order.__getitem__)

    @property
    def input(self) -> Node:
        """The single input node."""
        (node,) = [n for n in self._nodes.values() if n.op == "input"]
        return node

    @property
    def output(self) -> Node:
        """The (first) output node."""
        return self.node(self.outputs[0])

    def params(self) -> int:
        """Total learnable parameters."""
        return sum(n.params for n in self.nodes())

    def macs(self) -> int:
        """Total multiply-adds per image (conv and linear, the paper's FLOPs)."""
        return sum(n.macs for n in self.nodes())

    def stages(self) -> list[dict[str, Any]]:
        """Per top-level statement: name, output shape, params and multiply-adds, in order."""
        rows: dict[str, dict[str, Any]] = {}
        for n in self.nodes():
            if n.op == "input":
                continue
            row = rows.setdefault(n.stage, {"name": n.stage, "output_shape": [], "params": 0, "macs": 0})
            row["output_shape"] = list(n.shape)
            row["params"] += n.params
            row["macs"] += n.macs
        return list(rows.values())

    # --- checking
    def lint(self) -> None:
        """Check the IR's invariants: a DAG, consistent edges, known ops and arities, shapes.

        Raises:
            LintError: the first broken invariant found.
        """
        try:
            nodes = self.nodes()
        except nx.NetworkXUnfeasible:
            raise LintError(f"graph {self.name!r} has a cycle") from None
        inputs = [n for n in nodes if n.op == "input"]
        if len(inputs) != 1:
            raise LintError(f"graph has {len(inputs)} input nodes, expected 1")
        if not self.outputs:
            raise LintError("graph has no outputs")
        for name in self.outputs:
            if name not in self._nodes:
                raise LintError(f"output {name!r} is not a node")
        if self.output_names and (
            len(self.output_names) != len(self.outputs) or len(set(self.output_names)) != len(self.output_names)
        ):
            raise LintError(f"output names {self.output_names} do not name the {len(self.outputs)} outputs uniquely")
        pred = self._g._pred  # plain adjacency dicts: much faster than the edge views
        for node in nodes:
            spec = OPS.get(node.op)
            if spec is None:
                raise LintError(f"{node.name}: unknown op {node.op!r}")
            if not spec.accepts(len(node.inputs)):
                raise LintError(f"{node.name}: {node.op} takes {spec.arity_text()} inputs, has {len(node.inputs)}")
            # the edges are exactly the inputs: as many, and input slot i from inputs[i]
            slots = pred[node.name]
            agree = sum(map(len, slots.values())) == len(node.inputs)
            for i, src in enumerate(node.inputs):
                agree = agree and src in slots and i in slots[src]
            if not agree:
                edges = sorted((k, u) for u, keys in slots.items() for k in keys)
                raise LintError(f"{node.name}: edges {edges} disagree with inputs {node.inputs}")
            if not node.shape or any((not isinstance(d, int)) or d < 1 for d in node.shape):
                raise LintError(f"{node.name}: bad shape {node.shape}")
            if node.op != "input":
                ins = [self._nodes[i].shape for i in node.inputs]
                resolved = spec.resolve(node.attrs, ins)
                if resolved != node.attrs:
                    raise LintError(f"{node.name}: attributes {node.attrs} lack derived values")
                # spec.infer(attrs) is spec.shape(resolve(attrs)): the resolved attributes are at hand
                expected = spec.shape(resolved, ins)
                if tuple(expected) != node.shape:
                    raise LintError(
                        f"{node.name}: shape {describe(node.shape)} but {node.op} infers {describe(expected)}"
                    )

    # --- serialisation
    def part(self, which: str) -> Graph:
        """The trunk (input up to the `cut`) or the head (after it) of a net with a cut, as a new graph.

        The trunk returns the outputs before the cut and the value at the cut (named "cut" when it is not
        an output); a part with one output returns it as a tensor, one with several a dict. The head's outputs
        are the net's after the cut (its last value at least). The head starts from a new input node of shape
        (C at the cut, *cut size); shapes, parameters and multiply-adds are inferred again from it.
        Node names are kept, so both parts keep the full net's state_dict keys.

        Raises:
            LintError: the graph has no cut, `which` is neither part, or the head reads a value from
                before the cut other than the cut itself.
            OpProblem: a head layer does not fit the cut size.
        """
        cut = self.meta.get("cut")
        if not cut or which not in ("trunk", "head"):
            raise LintError(f"graph {self.name!r} has no cut" if not cut else f"no part {which!r}")
        at = cut["node"]
        before = nx.ancestors(self._g, at) | {at}
        named = list(zip(self.output_names or [""] * len(self.outputs), self.outputs, strict=True))
        g = Graph(f"{self.name}_{which}")
        g.meta = {k: v for k, v in self.meta.items() if k != "cut"} | {"part": which, "cut_size": list(cut["size"])}
        if which == "trunk":
            for n in self.nodes():
                if n.name in before:
                    g.add_node(n.name, n.op, n.inputs, dict(n.attrs), n.shape, loc=n.loc, labelled=n.labelled)
            kept = [(k, o) for k, o in named if o in before and self.output_names]
            if at not in [o for _, o in kept]:
                kept.append(("cut", at))
            g.outputs = [o for _, o in kept]
            # one output is returned as a tensor, several as a dict
            g.output_names = [k for k, _ in kept] if len(kept) > 1 else []
            return g
        shape = (self.node(at).shape[0], *cut["size"])
        g.add_node("input", "input", (), {"shape": shape}, shape)
        for n in self.nodes():
            if n.name in before:
                continue
            ins = tuple("input" if i == at else i for i in n.inputs)
            stray = [i for i in ins if i != "input" and i in before]
            if stray:
                raise LintError(f"{n.name} reads {stray[0]!r} from before the cut: the head must start at the cut")
            _, out = infer_node(n.op, n.attrs, [g.node(i).shape for i in ins])
            g.add_node(n.name, n.op, ins, dict(n.attrs), out, loc=n.loc, labelled=n.labelled)
        after = [(k, o) for k, o in named if o not in before]
        if not after:
            raise LintError("nothing after the cut is an output")
        g.outputs = [o for _, o in after]
        g.output_names = [k for k, _ in after] if self.output_names and len(after) > 1 else []
        return g

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready, deterministic description of the graph."""
        nodes = []
        for n in self.nodes():
            nodes.append(
                {
                    "name": n.name,
                    "op": n.op,
                    "inputs": list(n.inputs),
                    "attrs": {k: _json_value(n.attrs[k]) for k in sorted(n.attrs)},
                    "shape": list(n.shape),
                    "params": n.params,
                    "macs": n.macs,
                    "labelled": n.labelled,
                    "loc": n.loc,
                }
            )
        return {
            "format": FORMAT,
            "name": self.name,
            "meta": {k: self.meta[k] for k in sorted(self.meta)},
            "outputs": list(self.outputs),
            **({"output_names": list(self.output_names)} if self.output_names else {}),
            "params": self.params(),
            "macs": self.macs(),
            "nodes": nodes,
        }

    def dump_json(self) -> str:
        """The graph as stable JSON text (same spec, same bytes)."""
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def dump_text(self) -> str:
        """The graph as one line per node, for reading and diffing."""
        lines = [f"graph {self.name}:"]
        for n in self.nodes():
            attrs = ", ".join(f"{k}={describe(v) if v is not None else 'auto'}" for k, v in sorted(n.attrs.items()))
            ins = ", ".join(f"%{i}" for i in n.inputs)
            lines.append(f"  %{n.name} = {n.op}({ins}){' {' + attrs + '}' if attrs else ''} : {describe(n.shape)}")
        if self.output_names:
            outs = ", ".join(f"{k}=%{o}" for k, o in zip(self.output_names, self.outputs, strict=True))
            lines.append(f"  return {{{outs}}}")
        else:
            lines.append(f"  return {', '.join('%' + o for o in self.outputs)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Graph:
        """Rebuild a graph from `to_dict` output."""
        g = cls(data["name"])
        g.meta = dict(data.get("meta", {}))
        for n in data["nodes"]:
            attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in n["attrs"].items()}
            g.add_node(n["name"], n["op"], n["inputs"], attrs, tuple(n["shape"]), loc=n["loc"], labelled=n["labelled"])
        g.outputs = list(data["outputs"])
        g.output_names = list(data.get("output_names", []))
        return g
