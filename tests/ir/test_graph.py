"""Graph IR: building, lint, users/rewrites, stages and deterministic dumps."""

from __future__ import annotations

import json

import pytest

from archc.api import build
from archc.ir import Graph, LintError
from archc.ir.ops import OPS


def _conv_attrs(out: int, k: int = 3, stride: int = 1) -> dict:
    return OPS["conv"].check_attrs({"out": out, "kernel": (k, k), "stride": stride})


def small_graph() -> Graph:
    """input -> conv -> bn -> relu -> add(relu, input) -> output, built by hand."""
    g = Graph("tiny")
    g.add_node("input", "input", (), {"shape": (4, 8, 8)}, (4, 8, 8))
    a = _conv_attrs(4)
    g.add_node("conv", "conv", ("input",), a, OPS["conv"].infer(a, [(4, 8, 8)]))
    b = OPS["bn"].check_attrs({})
    g.add_node("bn", "bn", ("conv",), b, (4, 8, 8))
    g.add_node("relu", "relu", ("bn",), {}, (4, 8, 8))
    g.add_node("add", "add", ("relu", "input"), {}, (4, 8, 8))
    g.outputs = ["add"]
    return g


def test_small_graph_lints_and_counts() -> None:
    g = small_graph()
    g.lint()
    assert len(g) == 5
    assert g.node("conv").params == 4 * 4 * 9
    assert g.node("conv").macs == 4 * 4 * 9 * 8 * 8
    assert g.node("bn").params == 8
    assert g.params() == 144 + 8
    assert g.macs() == 144 * 64
    assert [n.name for n in g.nodes()] == ["input", "conv", "bn", "relu", "add"]
    assert g.users("input") == ["conv", "add"]
    assert g.input.name == "input" and g.output.name == "add"


def test_lint_rejects_wrong_shape() -> None:
    g = small_graph()
    g.node("relu").shape = (5, 8, 8)
    with pytest.raises(LintError, match="relu"):
        g.lint()


def test_lint_rejects_inputs_that_disagree_with_edges() -> None:
    g = small_graph()
    g.node("add").inputs = ("input", "relu")
    with pytest.raises(LintError, match="disagree"):
        g.lint()


def test_lint_rejects_wrong_arity_and_missing_output() -> None:
    g = small_graph()
    g.outputs = ["nope"]
    with pytest.raises(LintError, match="output"):
        g.lint()
    g = small_graph()
    g.outputs = []
    with pytest.raises(LintError, match="no outputs"):
        g.lint()


def test_duplicate_node_and_missing_input_are_internal_errors() -> None:
    g = small_graph()
    with pytest.raises(LintError, match="duplicate"):
        g.add_node("relu", "relu", ("bn",), {}, (4, 8, 8))


def test_replace_all_uses_and_remove() -> None:
    g = small_graph()
    with pytest.raises(LintError, match="still used"):
        g.remove_node("relu")
    g.replace_all_uses("relu", "bn")
    assert g.node("add").inputs == ("bn", "input")
    g.remove_node("relu")
    g.lint()
    assert "relu" not in g
    assert g.users("bn") == ["add"]


def test_add_of_the_same_value_twice_keeps_both_edges() -> None:
    g = Graph("double")
    g.add_node("input", "input", (), {"shape": (2, 4, 4)}, (2, 4, 4))
    g.add_node("add", "add", ("input", "input"), {}, (2, 4, 4))
    g.outputs = ["add"]
    g.lint()
    assert g.node("add").inputs == ("input", "input")


def test_dict_round_trip_is_identical() -> None:
    g = build("specs/resnet18.arch", lower=False).graph
    again = Graph.from_dict(json.loads(g.dump_json()))
    again.lint()
    assert again.dump_json() == g.dump_json()
    assert again.dump_text() == g.dump_text()


def test_dumps_are_deterministic_across_builds() -> None:
    a = build("specs/resnet50.arch", lower=False).graph
    b = build("specs/resnet50.arch", lower=False).graph
    assert a.dump_json() == b.dump_json()
    data = json.loads(a.dump_json())
    assert data["format"] == "archc-ir/1"
    assert data["params"] == 25_557_032
    # locations are relative to the spec's folder, so the dump does not depend on the cwd
    assert data["nodes"][1]["loc"].startswith("resnet50.arch:")
    assert any(n["loc"].startswith("blocks/resnet.arch:") for n in data["nodes"])


def test_stages_sum_to_totals() -> None:
    g = build("specs/resnet34.arch", lower=False, passes=[]).graph
    rows = g.stages()
    assert [r["name"] for r in rows][:5] == ["conv1", "bn1", "relu", "maxpool", "layer1"]
    assert sum(r["params"] for r in rows) == g.params()
    assert sum(r["macs"] for r in rows) == g.macs()
    assert rows[-1]["name"] == "fc" and rows[-1]["output_shape"] == [1000]


def test_text_dump_shows_ops_attrs_and_shapes() -> None:
    text = build("specs/cifar/resnet20.arch", lower=False, passes=[]).graph.dump_text()
    assert "%conv1 = conv(%input) {bias=false, dilation=1x1, groups=1, kernel=3x3, out=16" in text
    assert "%layer2.0.downsample.subsample = subsample(%layer1.2.relu_1) {stride=2x2} : 16x16x16" in text
    assert "%layer2.0.downsample.pad = pad(%layer2.0.downsample.subsample) {out=32} : 32x16x16" in text
    assert text.rstrip().endswith("return %fc")


def test_lint_rejects_a_cycle() -> None:
    g = small_graph()
    g.replace_all_uses("conv", "relu")  # bn now reads relu, which reads bn
    with pytest.raises(LintError, match="cycle"):
        g.lint()


def test_nodes_take_the_earliest_created_ready_node_when_creation_order_is_not_topological() -> None:
    g = small_graph()
    g.add_node("late", "relu", ("input",), {}, (4, 8, 8))
    g.rewrite("add", "add", ("relu", "late"), {})  # add (older) now reads late (newer)
    g.rewrite("bn", "bn", ("late",), dict(g.node("bn").attrs))  # and so does bn; conv has no user left
    order = [n.name for n in g.nodes()]
    assert order == ["input", "conv", "late", "bn", "relu", "add"]
    g.lint()


def test_recording_collects_changed_nodes_and_producers_whose_users_change() -> None:
    g = small_graph()
    with g.recording() as touched:
        g.add_node("late", "relu", ("input",), {}, (4, 8, 8))
    assert touched == {"late", "input"}
    with g.recording() as touched:
        g.replace_all_uses("relu", "late")  # add reads late instead of relu
    assert touched == {"relu", "late", "add"}
    with g.recording() as touched:
        g.remove_node("relu")
        g.rewrite("bn", "bn", ("input",), dict(g.node("bn").attrs))
    assert touched == {"relu", "bn", "conv", "input"}
    g.add_node("unseen", "relu", ("input",), {}, (4, 8, 8))  # outside a recording block: not kept anywhere
    assert g.downstream(["input"], 1) == {"input", "conv", "bn", "late", "add", "unseen"}
    assert g.downstream(["conv", "gone"], 0) == {"conv"}
