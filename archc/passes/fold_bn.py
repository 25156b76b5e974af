"""Fold BN into the preceding conv (eval only): a one-rule table.

    bn(conv(x, W, b), gamma, beta, mean, var, eps)
      = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)

so the pair becomes one `fused_conv` (with bias) under the conv's name. The weights
themselves are folded when a checkpoint is loaded (archc.weights.fold_state_dict),
from the IR's record of which BN went where.
"""

from __future__ import annotations

from archc.ir import Graph, Node
from archc.passes.manager import register
from archc.passes.patterns import ANY, Match, Rule, fuse_into, pat, rewrite_fixed_point

# BN with running statistics is a fixed affine in eval mode, frozen or not; without them it
# normalises with the batch's statistics and folds into nothing
BN_OPS = ("bn", "frozen_bn")


def _fold(graph: Graph, m: Match) -> Node:
    conv, bn = m["conv"], m["bn"]
    attrs = {
        **conv.attrs,
        "bias": True,
        "conv_bias": conv.attrs["bias"],
        "folded_bn": bn.name,
        "bn_eps": bn.attrs["eps"],
        "act": "none",
        "residual": False,
    }
    return fuse_into(graph, m, conv, "fused_conv", conv.inputs, attrs)


RULES = [
    # bn(conv(x)) -> fused_conv(x, folded_bn=bn)    W' = W * s, b' = (b - mean) * s + beta
    Rule(
        "conv_bn",
        pat(BN_OPS, pat("conv", ANY("x"), name="conv"), name="bn"),
        _fold,
        where=lambda m: m["bn"].attrs["track_running_stats"],
    ),
]


@register("fold_bn", "fold each BN into the conv before it (eval; needs running statistics)")
def fold_bn(graph: Graph) -> int:
    """Fold every conv -> bn pair whose conv output has no other user.

    Returns:
        How many BNs were folded.
    """
    return rewrite_fixed_point(graph, RULES)
