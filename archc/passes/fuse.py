"""Fuse activations and residual adds into their producers: two tables of rewrite rules.

Rules, with their algebra. Each pattern is rooted at an activation `f`: any op the registry
puts in the "act" family (relu, relu6, sigmoid, silu, hardswish, hardsigmoid, gelu, tanh,
leaky_relu), whose attributes go along as the fused op's act_<attr> (archc.ir.fused); `add`
commutes, so the producer may be either operand:

eval (after fold_bn):
  conv_add_act  f(add(fused_conv(x), r))        -> fused_conv(x, r, act=f)      y = f(conv(x) + b + r)
                f(add(r, fused_conv(x)))        -> the same; addition commutes
  conv_act      f(fused_conv(x))                -> fused_conv(x, act=f)
                f(conv(x))                      -> fused_conv(x, act=f)          (no BN to fold)
train:
  bn_add_act    f(add(bn(x), r))                -> bn_act(x, r, act=f)          y = f(bn(x) + r)
                f(add(r, bn(x)))                -> the same
  bn_act        f(bn(x))                        -> bn_act(x, act=f)

A producer is fused only when its result has no other user, so no value that
something else reads disappears (the pattern driver checks it for every rule).
"""

from __future__ import annotations

from archc.ir import OPS, Graph, Node
from archc.ir.activations import ACTIVATIONS
from archc.ir.fused import epilogue_attrs
from archc.passes.manager import register
from archc.passes.patterns import ANY, Match, Pattern, Rule, fuse_into, pat, rewrite_fixed_point


def _bare_conv(n: Node) -> bool:
    """A conv with no epilogue yet: a plain conv, or a fused_conv (a folded BN) without act or add."""
    return n.op == "conv" or (n.op == "fused_conv" and n.attrs["act"] == "none" and not n.attrs["residual"])


def _conv_attrs(n: Node) -> dict:
    if n.op == "fused_conv":
        return dict(n.attrs)
    return {**n.attrs, "conv_bias": n.attrs["bias"], "folded_bn": None, "bn_eps": 1e-5, "residual": False}


def _is_act(n: Node) -> bool:
    # an activation the epilogues can compute: in the "act" family and in the activation table
    # (an op of the family that the table does not describe stays a layer of its own)
    return OPS[n.op].family == "act" and n.op in ACTIVATIONS


def _act(m: Match) -> dict:
    """The fused op's epilogue attributes for the match's activation."""
    return epilogue_attrs(m["act"].op, m["act"].attrs)


def _conv_act(graph: Graph, m: Match) -> Node:
    conv = m["conv"]
    return fuse_into(graph, m, conv, "fused_conv", conv.inputs, {**_conv_attrs(conv), **_act(m)})


def _conv_add_act(graph: Graph, m: Match) -> Node:
    conv = m["conv"]
    attrs = {**conv.attrs, **_act(m), "residual": True}
    return fuse_into(graph, m, conv, "fused_conv", (m["x"].name, m["r"].name), attrs)


def _bn_act(graph: Graph, m: Match) -> Node:
    bn = m["bn"]
    return fuse_into(graph, m, bn, "bn_act", bn.inputs, {**bn.attrs, **_act(m), "residual": False})


def _bn_add_act(graph: Graph, m: Match) -> Node:
    bn = m["bn"]
    attrs = {**bn.attrs, **_act(m), "residual": True}
    return fuse_into(graph, m, bn, "bn_act", (m["x"].name, m["r"].name), attrs)


# an activation applied to P
def _act_of(producer: Pattern) -> Pattern:
    return pat(_is_act, producer, name="act")


# f(add(P, r)): the residual tail of producer pattern P, either operand of the add
def _tail(producer: Pattern) -> Pattern:
    return _act_of(pat("add", producer, ANY("r")))


EVAL_RULES = [
    # f(add(fused_conv(x), r)) -> fused_conv(x, r, act=f): y = f(conv(x) + b + r)
    Rule(
        "conv_add_act",
        _tail(pat(lambda n: n.op == "fused_conv" and _bare_conv(n), ANY("x"), name="conv")),
        _conv_add_act,
    ),
    # f(conv(x)) -> fused_conv(x, act=f), the conv with or without a folded BN
    Rule("conv_act", _act_of(pat(_bare_conv, ANY("x"), name="conv")), _conv_act),
]

TRAIN_RULES = [
    # f(add(bn(x), r)) -> bn_act(x, r, act=f): y = f(bn(x) + r), the BN keeps its name and buffers
    Rule("bn_add_act", _tail(pat("bn", ANY("x"), name="bn")), _bn_add_act),
    # f(bn(x)) -> bn_act(x, act=f)
    Rule("bn_act", _act_of(pat("bn", ANY("x"), name="bn")), _bn_act),
]


@register(
    "fuse_eval",
    "fuse conv(+folded BN)+activation and the residual add+activation into fused_conv (eval)",
    requires=("fold_bn",),
)
def fuse_eval(graph: Graph) -> int:
    """Apply the eval rules (a fused_conv only forms after fold_bn, so fold_bn must come first)."""
    return rewrite_fixed_point(graph, EVAL_RULES)


@register("fuse_train", "fuse BN(+residual add)+activation into bn_act (train)")
def fuse_train(graph: Graph) -> int:
    """Apply the train rules."""
    return rewrite_fixed_point(graph, TRAIN_RULES)
