"""Fuse activations and residual adds into their producers: a table of rewrite rules.

Each rule looks at one node and returns True after rewriting, False when it does
not apply (the graph is then untouched). Rules, with their algebra:

eval (after fold_bn):
  conv_act      relu(fused_conv(x))             -> fused_conv(x, act=relu)
                relu(conv(x))                   -> fused_conv(x, act=relu)       (no BN to fold)
  conv_add_act  relu(add(fused_conv(x), r))     -> fused_conv(x, r, act=relu)   y = relu(conv(x) + b + r)
                relu(add(r, fused_conv(x)))     -> the same; addition commutes
train:
  bn_act        relu(bn(x))                     -> bn_act(x)
  bn_add_act    relu(add(bn(x), r))             -> bn_act(x, r)                 y = relu(bn(x) + r)
                relu(add(r, bn(x)))             -> the same

A producer is fused only when its result has no other user, so no value that
something else reads disappears.
"""

from __future__ import annotations

from collections.abc import Callable

from archc.ir import Graph, Node
from archc.passes.fold_bn import sole_user
from archc.passes.manager import register


def _absorb(graph: Graph, keep: Node, op: str, inputs: tuple[str, ...], attrs: dict, gone: list[Node]) -> bool:
    """Rewrite `keep` to op(inputs), let it stand for the last of `gone`, and delete `gone`."""
    graph.rewrite(keep.name, op, inputs, attrs)
    graph.replace_all_uses(gone[-1].name, keep.name)
    for node in reversed(gone):
        graph.remove_node(node.name)
    return True


def _conv_attrs(n: Node) -> dict:
    if n.op == "fused_conv":
        return dict(n.attrs)
    return {**n.attrs, "conv_bias": n.attrs["bias"], "folded_bn": None, "bn_eps": 1e-5, "residual": False}


def conv_act(graph: Graph, n: Node) -> bool:
    if not (n.op == "fused_conv" and n.attrs["act"] == "none" and not n.attrs["residual"]) and n.op != "conv":
        return False
    relu = sole_user(graph, n)
    if relu is None or relu.op != "relu":
        return False
    return _absorb(graph, n, "fused_conv", n.inputs, {**_conv_attrs(n), "act": "relu"}, [relu])


def _tail(graph: Graph, n: Node) -> tuple[Node, Node, str] | None:
    """For producer n: (add, relu, other input) when relu(add(n, other)) with single users."""
    add = sole_user(graph, n)
    if add is None or add.op != "add":
        return None
    relu = sole_user(graph, add)
    if relu is None or relu.op != "relu":
        return None
    other = add.inputs[1] if add.inputs[0] == n.name else add.inputs[0]
    return add, relu, other


def conv_add_act(graph: Graph, n: Node) -> bool:
    if n.op != "fused_conv" or n.attrs["act"] != "none" or n.attrs["residual"]:
        return False
    tail = _tail(graph, n)
    if tail is None:
        return False
    add, relu, other = tail
    attrs = {**n.attrs, "act": "relu", "residual": True}
    return _absorb(graph, n, "fused_conv", (n.inputs[0], other), attrs, [add, relu])


def bn_act(graph: Graph, n: Node) -> bool:
    if n.op != "bn":
        return False
    relu = sole_user(graph, n)
    if relu is None or relu.op != "relu":
        return False
    return _absorb(graph, n, "bn_act", n.inputs, {**n.attrs, "act": "relu", "residual": False}, [relu])


def bn_add_act(graph: Graph, n: Node) -> bool:
    if n.op != "bn":
        return False
    tail = _tail(graph, n)
    if tail is None:
        return False
    add, relu, other = tail
    attrs = {**n.attrs, "act": "relu", "residual": True}
    return _absorb(graph, n, "bn_act", (n.inputs[0], other), attrs, [add, relu])


Rule = Callable[[Graph, Node], bool]


def _apply(graph: Graph, rules: list[Rule]) -> int:
    changes = 0
    for node in graph.nodes():
        if node.name not in graph:
            continue
        for rule in rules:
            if rule(graph, graph.node(node.name)):
                changes += 1
                break
    return changes


@register("fuse_eval", "fuse conv(+folded BN)+ReLU and the residual add+ReLU into fused_conv (eval)")
def fuse_eval(graph: Graph) -> int:
    """Apply the eval rules (the residual tail first, so a conv takes its add before a bare ReLU)."""
    return _apply(graph, [conv_add_act, conv_act])


@register("fuse_train", "fuse BN(+residual add)+ReLU into bn_act (train)")
def fuse_train(graph: Graph) -> int:
    """Apply the train rules."""
    return _apply(graph, [bn_add_act, bn_act])
