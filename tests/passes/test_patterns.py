"""The rewrite-rule driver (archc.passes.patterns) and each shipped rule on its own.

Every rule case checks the change, that the graph lints, and equal eval-mode outputs of the
rewritten graph and the unoptimised spec, both lowered by the torch backend from one random state.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from archc.api import build, load_weights
from archc.backend import get_backend
from archc.ir import Graph, LintError, Node
from archc.passes import fold_bn, fuse
from archc.passes.patterns import ANY, Match, Rule, fuse_into, pat, rewrite_fixed_point
from tests.passes.test_fold_bn import CONV_BN, one_thread, ops, same_outputs, unoptimised  # noqa: F401
from tests.passes.test_fuse import BRANCH_CONV, MAIN_CONV, NO_BN, SHAPE, TWO_ADDS

RULES = {r.name: r for r in [*fold_bn.RULES, *fuse.EVAL_RULES, *fuse.TRAIN_RULES]}


def through(
    spec: str, rules: list[Rule], first: tuple[str, ...] = (), edit: Callable[[Graph], None] | None = None
) -> tuple[Graph, Graph, int]:
    """(before, after, rewrites): the spec after the passes `first` (and `edit`), then through `rules`."""
    before, after = (build(spec, passes=list(first), lower=False).graph for _ in range(2))
    if edit is not None:
        edit(before)
        edit(after)
    changes = rewrite_fixed_point(after, rules)
    after.lint()
    return before, after, changes


def same_function(spec: str, graph: Graph, shape: tuple[int, ...] = SHAPE) -> None:
    """The rewritten graph computes what the unoptimised spec does (float64, eval mode)."""
    _, want, state = unoptimised(spec)
    got = get_backend("torch").lower(graph).to(torch.float64)
    load_weights(got, state, graph)
    same_outputs(want, got, shape, torch.float64)


# --- each shipped rule -------------------------------------------------------------------


def test_conv_bn_folds() -> None:
    before, after, n = through(CONV_BN, [RULES["conv_bn"]])
    assert n == 1 and ops(before)["c"] == "conv" and "b" not in after
    assert ops(after)["c"] == "fused_conv" and after.node("c").attrs["folded_bn"] == "b"
    assert after.node("r").inputs == ("c",)
    same_function(CONV_BN, after, (3, 8, 8))


def test_conv_act_fuses_a_plain_conv_and_a_folded_one() -> None:
    _, after, n = through(NO_BN, [RULES["conv_act"]])
    assert n == 1 and after.node("c").op == "fused_conv" and after.node("c").attrs["act"] == "relu"
    assert "relu" not in after and after.node("c2").op == "conv"
    same_function(NO_BN, after)
    before, after, n = through(MAIN_CONV, [RULES["conv_act"]], first=("fold_bn",))
    assert n == 1 and before.node("stem").attrs["act"] == "none" and after.node("stem").attrs["act"] == "relu"
    assert after.node("blk.c").attrs["act"] == "none"  # relu(add(...)) is the tail rule's
    same_function(MAIN_CONV, after)


@pytest.mark.parametrize("spec", [MAIN_CONV, BRANCH_CONV], ids=["conv_first", "conv_second"])
def test_conv_add_act_takes_either_operand_of_the_add(spec: str) -> None:
    before, after, n = through(spec, [RULES["conv_add_act"]], first=("fold_bn",))
    c = after.node("blk.c")
    assert n == 1 and "blk.add" in before and "blk.add" not in after
    assert c.attrs["residual"] and c.attrs["act"] == "relu" and c.inputs[0] == before.node("blk.c").inputs[0]
    same_function(spec, after)


def test_bn_act_fuses_only_a_bare_relu() -> None:
    _, after, n = through(MAIN_CONV, [RULES["bn_act"]])
    assert n == 1 and after.node("sb").op == "bn_act" and not after.node("sb").attrs["residual"]
    assert after.node("blk.b").op == "bn"  # its ReLU reads the add, not the BN
    same_function(MAIN_CONV, after)


@pytest.mark.parametrize("spec", [MAIN_CONV, BRANCH_CONV], ids=["bn_first", "bn_second"])
def test_bn_add_act_commutes(spec: str) -> None:
    # relu(add(bn(x), r)) and relu(add(r, bn(x))) both fuse
    before, after, n = through(spec, [RULES["bn_add_act"]])
    bn_slot = before.node("blk.add").inputs.index("blk.b")
    assert bn_slot == (0 if spec == MAIN_CONV else 1)
    b = after.node("blk.b")
    assert n == 1 and b.op == "bn_act" and b.attrs["residual"] and "blk.add" not in after
    assert b.inputs == ("blk.c", before.node("blk.add").inputs[1 - bn_slot])
    same_function(spec, after)


# --- the driver --------------------------------------------------------------------------


def test_a_rule_that_does_not_apply_leaves_the_graph_untouched() -> None:
    seen: list[str] = []

    def declines(graph: Graph, m: Match) -> Node | None:
        seen.append(m.root.name)
        return None

    before, after, n = through(MAIN_CONV, [Rule("declines", pat("relu", ANY()), declines)])
    assert n == 0 and seen == ["relu", "blk.relu"] and after.dump_text() == before.dump_text()
    refused = Rule("refused", pat("relu", pat("bn", name="bn")), RULES["bn_act"].rewrite, where=lambda m: False)
    _, after, n = through(MAIN_CONV, [refused])
    assert n == 0 and after.dump_text() == before.dump_text()


def test_commutative_inputs_are_tried_both_ways_others_only_as_written() -> None:
    seen: list[tuple[str, str]] = []

    def record(graph: Graph, m: Match) -> None:
        seen.append((m["a"].name, m["b"].name))

    add_rule = Rule("pairs", pat("add", ANY("a"), ANY("b")), record)
    through(BRANCH_CONV, [add_rule])
    assert seen == [("blk.m", "blk.b"), ("blk.b", "blk.m")]  # written order first
    # bn_act(x, r) is not commutative: a pattern with its operands swapped does not match
    seen.clear()
    swapped = Rule("swapped", pat("bn_act", pat("maxpool", name="a"), ANY("b")), record)
    as_written = Rule("as_written", pat("bn_act", ANY("b"), pat("maxpool", name="a")), record)
    _, after, _ = through(BRANCH_CONV, [swapped], first=("fuse_train",))
    assert seen == [] and after.node("blk.b").inputs == ("blk.c", "blk.m")
    through(BRANCH_CONV, [as_written], first=("fuse_train",))
    assert seen == [("blk.m", "blk.c")]


def test_a_swallowed_producer_with_another_user_is_refused() -> None:
    # b2 feeds both a ReLU and an add
    before, after, n = through(NO_BN, fuse.TRAIN_RULES)
    assert n == 0 and after.dump_text() == before.dump_text()
    assert after.users("b2") == ["blk.relu", "blk.add"]

    def reads_twice(g: Graph) -> None:  # add(b, b): one user reading the value twice is two uses
        g.rewrite("blk.add", "add", ("blk.b", "blk.b"), {})

    before, after, n = through(MAIN_CONV, [RULES["bn_add_act"]], edit=reads_twice)
    assert n == 0 and after.dump_text() == before.dump_text()


def test_a_swallowed_producer_that_is_an_output_is_refused() -> None:
    def tap(g: Graph) -> None:
        g.outputs.append("sb")

    _, after, n = through(MAIN_CONV, fuse.TRAIN_RULES, edit=tap)
    assert n == 1 and ops(after)["sb"] == "bn" and ops(after)["relu"] == "relu"
    assert after.node("blk.b").op == "bn_act" and after.outputs == ["head", "sb"]
    # the root may be an output: the node standing for it takes its place
    before, after, n = through(TWO_ADDS, [RULES["bn_add_act"]])
    assert before.outputs == ["blk.relu_1"] and after.outputs == ["blk.b2"] and n == 2
    same_function(TWO_ADDS, after)


def test_rules_run_to_a_fixed_point() -> None:
    # freezing a BN in place makes it foldable, which the same sweep has already passed: one more sweep
    def freeze(graph: Graph, m: Match) -> Node:
        bn = m["bn"]
        return graph.rewrite(bn.name, "frozen_bn", bn.inputs, dict(bn.attrs))

    table = [Rule("freeze", pat("bn", name="bn"), freeze), RULES["conv_bn"]]
    _, after, n = through(CONV_BN, table)
    assert n == 2 and ops(after)["c"] == "fused_conv" and "b" not in after
    assert rewrite_fixed_point(after, table) == 0
    same_function(CONV_BN, after, (3, 8, 8))


def test_the_same_graph_gives_the_same_result() -> None:
    results = [through(MAIN_CONV, [*fold_bn.RULES, *fuse.EVAL_RULES]) for _ in range(2)]
    (_, a, na), (_, b, nb) = results
    assert na == nb == 4 and a.dump_json() == b.dump_json()


def test_rules_that_undo_each_other_are_a_lint_error() -> None:
    def to(op: str) -> Callable[[Graph, Match], Node]:
        return lambda graph, m: fuse_into(graph, m, m.root, op, m.root.inputs, {})

    table = [Rule("relu_to_identity", pat("relu"), to("identity")), Rule("back", pat("identity"), to("relu"))]
    with pytest.raises(LintError, match="no fixed point"):
        through(NO_BN, table)


# the conv feeds its BN and, as the block's input, the add: not foldable until the add stops reading it
SHARED_TAIL = """
block bn_add() {
  b: bn
  add
}
net shared_tail(input_size=3x8x8) {
  input input_size
  c: conv(3x3, 3)
  blk: bn_add
  head: conv(1x1, 2)
  t1: relu
  t2: relu
  t3: relu
  t4: relu
}
"""


def _unshare(graph: Graph, m: Match) -> Node:
    # the add reads the net's input instead of the conv (same shape), leaving the conv one user
    return graph.rewrite(m.root.name, "add", (m["m"].name, "input"), {})


UNSHARE = Rule("unshare", pat("add", ANY("m"), ANY()), _unshare, where=lambda m: m.root.inputs == ("blk.b", "c"))


def full_sweeps(graph: Graph, rules: list[Rule]) -> int:
    """The driver without settled nodes: every sweep tries every node, until a sweep rewrites nothing."""
    total = 0
    while True:
        fired = 0
        for node in graph.nodes():
            if node.name in graph and any(r.apply(graph, graph.node(node.name)) is not None for r in rules):
                fired += 1
        if not fired:
            return total
        total += fired


def test_a_rule_enabled_by_a_later_rewrite_elsewhere_still_fires() -> None:
    # sweep 1 passes blk.b (the conv has two users), then unshares the add further down;
    # the conv's users changed, so blk.b is tried again and the BN folds
    tried: list[str] = []
    probe = Rule("probe", pat(lambda n: tried.append(n.name) or False), _unshare)
    _, after, n = through(SHARED_TAIL, [RULES["conv_bn"], UNSHARE, probe])
    assert n == 2 and ops(after)["c"] == "fused_conv" and after.node("c").attrs["folded_bn"] == "blk.b"
    assert after.node("blk.add").inputs == ("c", "input")
    # three sweeps; a node far below the changes is settled after the first: tried once, not three times
    assert tried.count("t4") == 1 and tried.count("c") == 3
    reference = build(SHARED_TAIL, passes=[], lower=False).graph
    assert full_sweeps(reference, [RULES["conv_bn"], UNSHARE]) == n
    assert reference.dump_json() == after.dump_json()


@pytest.mark.parametrize(
    "spec", ["specs/resnet50.arch", "specs/cifar/resnet20.arch", "specs/zoo/mobilenet_v3_large.arch"]
)
def test_the_driver_rewrites_what_full_sweeps_rewrite(spec: str) -> None:
    tables = [fold_bn.RULES + fuse.EVAL_RULES, fuse.TRAIN_RULES, fold_bn.RULES]
    for rules in tables:
        ours, theirs = (build(spec, passes=["dce"], lower=False).graph for _ in range(2))
        assert rewrite_fixed_point(ours, rules) == full_sweeps(theirs, rules) > 0
        assert ours.dump_json() == theirs.dump_json()


# the BN is two inputs above the ReLU that can fuse it, and a later ReLU also reads it
DEEP_SHARE = """
net deep_share(input_size=3x8x8) {
  input input_size
  s: conv(3x3, 3)
  c: bn
  -> cv
  add
  r: relu
  from cv
  l: relu
}
"""


def test_a_change_two_inputs_above_a_node_unsettles_it() -> None:
    # rerouting l leaves the BN one user; the ReLU that can now fuse it is two inputs below the BN
    reroute = Rule(
        "reroute",
        pat("relu", ANY()),
        lambda graph, m: graph.rewrite(m.root.name, "relu", ("s",), {}),
        where=lambda m: m.root.inputs == ("c",),
    )
    _, after, n = through(DEEP_SHARE, [RULES["bn_add_act"], reroute])
    assert n == 2 and ops(after)["c"] == "bn_act" and "r" not in after
    reference = build(DEEP_SHARE, passes=[], lower=False).graph
    assert full_sweeps(reference, [RULES["bn_add_act"], reroute]) == n
    assert reference.dump_json() == after.dump_json()
