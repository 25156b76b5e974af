"""Dead-node elimination: drop nodes whose value reaches no output."""

from __future__ import annotations

from archc.ir import Graph
from archc.passes.manager import register


@register("dce", "remove nodes whose result no output depends on")
def dce(graph: Graph) -> int:
    """Remove every node that no output depends on (the input node always stays).

    Returns:
        How many nodes were removed.
    """
    live: set[str] = set()
    todo = list(graph.outputs)
    while todo:
        name = todo.pop()
        if name in live:
            continue
        live.add(name)
        todo.extend(graph.node(name).inputs)
    removed = 0
    # users before producers, so each removed node has no users left
    for node in reversed(graph.nodes()):
        if node.name not in live and node.op != "input":
            graph.remove_node(node.name)
            removed += 1
    return removed
