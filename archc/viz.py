"""Graphviz DOT for a graph IR, labelled like Fig. 3 of He et al. 2015.

Three depths:
  layer: every IR node ("3x3 conv, 64, /2", "bn", "+"), stages drawn as clusters.
  block: each block instance (the first two parts of a dotted name, `layer1.0`) as one node.
  stage: each top-level statement (`conv1`, `layer1`, ...) as one node.
Edges carry the producer's output shape ("64x56x56"). Only Graph methods are used, and the
output depends on nothing but the graph: the same graph gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from archc.ir.graph import Graph, Node
from archc.ir.ops import dims_text, is_one
from archc.ir.registry import OPS

DEPTHS = ("layer", "block", "stage")


def shape_text(shape: Sequence[int]) -> str:
    """`(64, 56, 56)` -> "64x56x56"."""
    return "x".join(str(d) for d in shape)


def node_label(node: Node) -> str:
    """The Fig. 3 style label of one IR node: "3x3 conv, 128, /2", "fc 1000", "+" (from the op registry)."""
    if node.op == "input":
        return f"input, {shape_text(node.shape)}"
    spec = OPS.get(node.op)
    return spec.text(node.attrs) if spec is not None else node.op


# --- the view: the nodes and edges drawn at one depth ---------------------------------------
@dataclass
class VNode:
    """One drawn node: `members` are the IR nodes it stands for, in topological order."""

    id: str
    label: str
    members: list[Node]
    kind: str  # "layer" (one IR node), "block" or "stage"


@dataclass
class VEdge:
    src: str
    dst: str
    label: str
    shortcut: bool = False


@dataclass
class View:
    """What `to_dot` draws; `nodes` and `edges` are in a deterministic order."""

    graph: Graph
    depth: str
    nodes: list[VNode] = field(default_factory=list)
    edges: list[VEdge] = field(default_factory=list)


def _group_key(node: Node, depth: str) -> str:
    if depth == "layer":
        return node.name
    if depth == "stage":
        return node.stage
    return ".".join(node.name.split(".")[:2])


def _is_shortcut_edge(dst: Node, slot: int) -> bool:
    spec = OPS.get(dst.op)
    return spec is not None and slot == spec.shortcut_slot and len(dst.inputs) > slot


def _has_shortcut(node: Node) -> bool:
    return any(_is_shortcut_edge(node, slot) for slot in range(len(node.inputs)))


def _exit_node(graph: Graph, members: list[Node]) -> Node:
    """The member whose value leaves the group (the last one read outside it, or an output)."""
    names = {m.name for m in members}
    leaving = [m for m in members if m.name in graph.outputs or any(u not in names for u in graph.users(m.name))]
    return (leaving or members)[-1]


def _block_summary(graph: Graph, members: list[Node]) -> tuple[str, str]:
    """(kind, summary) of a block instance: ("basic", "basic 128, /2\\nshortcut: 1x1 conv, 128, /2 + bn").

    The main path is followed from the block's exit through first inputs; its convs name the
    block (3x3-3x3: basic, 1x1-3x3-1x1: bottleneck); members off it form the shortcut.
    """
    by_name = {m.name: m for m in members}
    exit_node = _exit_node(graph, members)
    main: list[Node] = []
    cur: Node | None = exit_node
    while cur is not None:
        main.append(cur)
        cur = by_name.get(cur.inputs[0]) if cur.inputs else None
    main.reverse()
    main_names = {m.name for m in main}
    convs = [m for m in main if m.op in OPS and OPS[m.op].family == "conv"]
    residual = any(_has_shortcut(m) for m in members)
    width = shape_text(exit_node.shape[:1]) if exit_node.shape else ""
    if not convs:
        kind = ""
        head = f"{len(members)} layers, {shape_text(exit_node.shape)}"
    else:
        kernels = ["x".join(map(str, c.attrs["kernel"])) for c in convs]
        if kernels == ["3x3", "3x3"]:
            kind = "basic"
        elif kernels == ["1x1", "3x3", "1x1"]:
            kind = "bottleneck"
        else:
            kind = "-".join(kernels) + " conv"
        if not residual and kind in ("basic", "bottleneck"):
            kind = "plain " + kind
        head = f"{kind} {width}"
        strides = [c.attrs.get("stride") for c in convs if not is_one(c.attrs.get("stride"))]
        if strides:
            head += f", /{dims_text(strides[0])}"
    short = [node_label(m) for m in members if m.name not in main_names]
    if short:
        head += "\nshortcut: " + " + ".join(short)
    return kind, head


def _stage_label(graph: Graph, name: str, members: list[Node]) -> str:
    """ "layer2: 2 blocks, 128x28x28" (with the block kind below when all blocks share it)."""
    exit_node = _exit_node(graph, members)
    out = shape_text(exit_node.shape)
    blocks: dict[str, list[Node]] = {}
    for m in members:
        parts = m.name.split(".")
        if len(parts) >= 3:
            blocks.setdefault(parts[1], []).append(m)
    if not blocks:
        return f"{name}: {len(members)} layers, {out}"
    label = f"{name}: {len(blocks)} block{'s' if len(blocks) != 1 else ''}, {out}"
    kinds = {_block_summary(graph, ms)[0] for ms in blocks.values()}
    if len(kinds) == 1 and "" not in kinds:
        label += f"\n{kinds.pop()}"
    return label


def view(graph: Graph, depth: str = "layer") -> View:
    """Collapse `graph` to `depth` ("layer", "block" or "stage").

    Raises:
        ValueError: an unknown depth.
    """
    if depth not in DEPTHS:
        raise ValueError(f"unknown depth {depth!r}; depths: {', '.join(DEPTHS)}")
    nodes = graph.nodes()
    groups: dict[str, list[Node]] = {}
    for n in nodes:
        groups.setdefault(_group_key(n, depth), []).append(n)
    out = View(graph, depth)
    for key, members in groups.items():
        if len(members) == 1:
            out.nodes.append(VNode(key, node_label(members[0]), members, "layer"))
        elif depth == "stage":
            out.nodes.append(VNode(key, _stage_label(graph, key, members), members, "stage"))
        else:
            out.nodes.append(VNode(key, f"{key}: {_block_summary(graph, members)[1]}", members, "block"))
    group_of = {n.name: _group_key(n, depth) for n in nodes}
    seen: set[tuple[str, str, str]] = set()
    for n in nodes:
        dst = group_of[n.name]
        for slot, src_name in enumerate(n.inputs):
            src = group_of[src_name]
            if src == dst:
                continue
            label = shape_text(graph.node(src_name).shape)
            if depth != "layer":
                if (src, dst, label) in seen:
                    continue
                seen.add((src, dst, label))
            out.edges.append(VEdge(src, dst, label, _is_shortcut_edge(n, slot) and depth == "layer"))
    return out


# --- DOT text ------------------------------------------------------------------------------
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_KEYWORDS = {"node", "edge", "graph", "digraph", "subgraph", "strict"}  # DOT keywords, any case


def _q(s: str) -> str:
    """A DOT string literal (newlines become DOT's centred line breaks)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _id(s: str) -> str:
    return s if _ID.match(s) and s.lower() not in _KEYWORDS else _q(s)


def _node_attrs(v: VNode) -> str:
    attrs: dict[str, str] = {"label": v.label}
    if v.kind == "layer":
        node = v.members[0]
        attrs["tooltip"] = f"{node.name} ({node.op})"
        spec = OPS.get(node.op)
        if not any(c.isalnum() for c in v.label):  # a symbol such as "+": drawn as a small circle
            attrs.update(shape="circle", width="0.3", fixedsize="true", fontsize="12")
        elif node.op == "input":
            attrs.update(shape="box", style="filled", fillcolor="#eeeeee")
        elif spec is not None and not spec.surface:  # an op the passes made (fused)
            attrs.update(style="rounded,filled", fillcolor="#e6f0ff")
    else:
        attrs["tooltip"] = f"{v.id} ({len(v.members)} IR nodes)"
        attrs.update(style="rounded,filled", fillcolor="#f3f3f3" if v.kind == "block" else "#fff6e0")
    return ", ".join(f"{k}={_q(val)}" for k, val in attrs.items())


def render(v: View) -> str:
    """DOT text for a View; at layer depth, stages and blocks of several nodes are clusters."""
    g = v.graph
    lines = [
        f"digraph {_q(g.name)} {{",
        f"  graph [label={_q(f'{g.name} ({v.depth} depth)')}, labelloc=t, fontname=Helvetica, "
        "fontsize=14, rankdir=TB, nodesep=0.3, ranksep=0.3];",
        '  node [shape=box, style=rounded, fontname=Helvetica, fontsize=10, height=0.3, margin="0.1,0.04"];',
        "  edge [fontname=Helvetica, fontsize=8, arrowsize=0.6];",
    ]
    decl = {n.id: f"{_id(n.id)} [{_node_attrs(n)}];" for n in v.nodes}
    if v.depth == "layer":
        # stage -> block -> node ids, in first-appearance (topological) order
        tree: dict[str, dict[str, list[str]]] = {}
        for n in v.nodes:
            node = n.members[0]
            tree.setdefault(node.stage, {}).setdefault(".".join(node.name.split(".")[:2]), []).append(n.id)
        for stage, blocks in tree.items():
            count = sum(len(ids) for ids in blocks.values())
            if count == 1:
                lines += [f"  {decl[i]}" for ids in blocks.values() for i in ids]
                continue
            lines.append(f"  subgraph {_id('cluster_' + stage)} {{")
            lines.append(f'    label={_q(stage)}; style="rounded,dashed"; color="#999999"; fontsize=11;')
            for block, ids in blocks.items():
                if len(ids) > 1 and block != stage:
                    lines.append(f"    subgraph {_id('cluster_' + block)} {{")
                    lines.append(f'      label={_q(block)}; style=rounded; color="#cccccc"; fontsize=9;')
                    lines += [f"      {decl[i]}" for i in ids]
                    lines.append("    }")
                else:
                    lines += [f"    {decl[i]}" for i in ids]
            lines.append("  }")
    else:
        lines += [f"  {decl[n.id]}" for n in v.nodes]
    for e in v.edges:
        style = ", style=dashed" if e.shortcut else ""
        lines.append(f"  {_id(e.src)} -> {_id(e.dst)} [label={_q(e.label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph, depth: str = "layer") -> str:
    """DOT text of `graph` at `depth` ("layer", "block" or "stage"); deterministic.

    Raises:
        ValueError: an unknown depth.
    """
    return render(view(graph, depth))


__all__ = ["DEPTHS", "VEdge", "VNode", "View", "node_label", "render", "shape_text", "to_dot", "view"]
