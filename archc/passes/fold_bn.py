"""Fold BN into the preceding conv (eval only).

    bn(conv(x, W, b), gamma, beta, mean, var, eps)
      = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)

so the pair becomes one `fused_conv` (with bias) under the conv's name. The weights
themselves are folded when a checkpoint is loaded (archc.weights.fold_state_dict),
from the IR's record of which BN went where.
"""

from __future__ import annotations

from archc.ir import Graph, Node
from archc.passes.manager import register


def sole_user(graph: Graph, node: Node) -> Node | None:
    """The one node that reads `node`, or None when it has several users or is an output."""
    users = graph.users(node.name)
    if len(users) != 1 or node.name in graph.outputs:
        return None
    user = graph.node(users[0])
    # a user reading the value twice (add(x, x)) is two uses
    return user if user.inputs.count(node.name) == 1 else None


def fold_one(graph: Graph, conv: Node) -> bool:
    """Fold the BN after `conv` into it; False (graph untouched) when the rule does not apply."""
    if conv.op != "conv":
        return False
    bn = sole_user(graph, conv)
    if bn is None or bn.op not in ("bn", "frozen_bn") or not bn.attrs["track_running_stats"]:
        return False
    attrs = {
        **conv.attrs,
        "bias": True,
        "conv_bias": conv.attrs["bias"],
        "folded_bn": bn.name,
        "bn_eps": bn.attrs["eps"],
        "act": "none",
        "residual": False,
    }
    graph.rewrite(conv.name, "fused_conv", conv.inputs, attrs)
    graph.replace_all_uses(bn.name, conv.name)
    graph.remove_node(bn.name)
    return True


@register("fold_bn", "fold each BN into the conv before it (eval; needs running statistics)")
def fold_bn(graph: Graph) -> int:
    """Fold every conv -> bn pair whose conv output has no other user.

    Returns:
        How many BNs were folded.
    """
    return sum(fold_one(graph, n) for n in graph.nodes() if n.name in graph)
