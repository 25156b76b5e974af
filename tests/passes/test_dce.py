"""Dead-node elimination: removes what no output needs, keeps outputs equal."""

from __future__ import annotations

import copy

import torch

from archc.api import build
from archc.backend import get_backend
from archc.ir import Graph
from archc.ir.ops import OPS
from archc.passes import PassManager


def graph_with_dead_branch() -> Graph:
    g = build("specs/cifar/resnet20.arch", lower=False, passes=[]).graph
    src = "layer1.0.relu"
    attrs = OPS["conv"].check_attrs({"out": 8, "kernel": (3, 3)})
    shape = OPS["conv"].infer(attrs, [g.node(src).shape])
    g.add_node("dead.conv", "conv", (src,), attrs, shape, labelled=True)
    g.add_node("dead.relu", "relu", ("dead.conv",), {}, shape)
    g.lint()
    return g


def test_dce_removes_the_dead_branch_and_keeps_outputs() -> None:
    torch.manual_seed(0)
    g = graph_with_dead_branch()
    before = get_backend("torch").lower(g).eval()
    n = len(g)
    g2 = copy.deepcopy(g)  # a copy: the original keeps its dead nodes for comparison
    pm = PassManager(["dce"])
    pm.run(g2)
    assert len(g2) == n - 2
    assert "dead.conv" not in g2 and "dead.relu" not in g2
    g2.lint()
    after = get_backend("torch").lower(g2).eval()
    state = {k: v for k, v in before.state_dict().items() if not k.startswith("dead.")}
    after.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(after(x), before(x), rtol=0, atol=0)
    assert pm.records[0].changes == 2


def test_dce_leaves_a_live_graph_alone() -> None:
    g = build("specs/cifar/resnet20.arch", lower=False).graph
    text = g.dump_text()
    pm = PassManager(["dce"])
    pm.run(g)
    assert pm.records[0].changes == 0
    assert g.dump_text() == text
