"""Layout selection: channels_last for nets whose work is convolutions."""

from __future__ import annotations

from archc.ir import OPS, Graph
from archc.passes.manager import register


@register("channels_last", "run convolutions in channels_last (NHWC) memory format")
def channels_last(graph: Graph) -> int:
    """Mark the graph channels_last when it has a 2-D convolution on a CxHxW input.

    Backends convert the input once and keep weights and activations in that format.

    Returns:
        1 when the layout changed, else 0.
    """
    if graph.meta.get("memory_format") == "channels_last":
        return 0
    if not any(OPS[n.op].family == "conv" and len(n.shape) == 3 for n in graph.nodes()):
        return 0
    graph.meta["memory_format"] = "channels_last"
    return 1
