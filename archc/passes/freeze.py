"""Freeze BN for fine-tuning: every `bn` becomes `frozen_bn`, a fixed affine from its running statistics.

    frozen_bn(x) = x * s + (beta - mean * s),   s = gamma / sqrt(var + eps)

with the same parameter and buffer names, so a classification checkpoint loads unchanged. The paper's
detector fine-tunes this way (appendix A: "BN layers ... are fixed during fine-tuning").
"""

from __future__ import annotations

from archc.ir import Graph
from archc.passes.manager import register


@register("freeze_bn", "turn every BN into a fixed affine from its running statistics (fine-tuning)")
def freeze_bn(graph: Graph) -> int:
    """Rewrite each `bn` node into `frozen_bn`.

    Returns:
        How many BNs were frozen.
    """
    count = 0
    for n in graph.nodes():
        if n.op == "bn" and n.attrs["track_running_stats"]:
            graph.rewrite(n.name, "frozen_bn", n.inputs, dict(n.attrs))
            count += 1
    return count
