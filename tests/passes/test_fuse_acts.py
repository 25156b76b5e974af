"""fold_bn + fuse with every activation of the table, and nothing fused across a value with a second user.

Each case checks the change, that the graph lints, and equal outputs of the optimised and the
unoptimised spec lowered by the torch backend from one random state: float64 in eval mode (and a
float32 no-grad run through FusedConv2d's oneDNN path), and a float64 training step (outputs,
gradients, running statistics) for the train rules.
"""

from __future__ import annotations

import pytest
import torch

from archc.ir import OPS, Interpreter, OpProblem
from archc.ir.activations import ACTIVATIONS
from archc.ir.fused import epilogue_act
from tests.passes.test_fold_bn import one_thread, ops, same_outputs  # noqa: F401  (autouse fixture)
from tests.passes.test_fuse import SHAPE, both_paths, eval_pair, same_training_step, train_pair

# spec text -> (op, the activation's attributes as the fused op must carry them)
ACTS = {
    **{name: (name, OPS[name].check_attrs({})) for name in ACTIVATIONS},
    "leaky_relu(0.2)": ("leaky_relu", {"slope": 0.2}),
    "gelu(approximate=tanh)": ("gelu", {"approximate": "tanh"}),
}


def spec_with(act: str) -> str:
    """conv-bn-act stem, a residual block conv-bn-add-act, an unfused conv head: every rule's shape."""
    return f"""
block res() {{
  c: conv(3x3, 4)
  b: bn
  add
  {act}
}}
net acts(input_size=4x8x8) {{
  input input_size
  stem: conv(3x3, 4)
  sb: bn
  {act}
  blk: res
  head: conv(1x1, 2)
}}
"""


# the SE shape: the BN's output is read by an activation (the gate branch) and by the add
SE = """
block gate() {
  sigmoid
  add { identity }
}
net se(input_size=4x8x8) {
  input input_size
  stem: conv(3x3, 4)
  sb: bn
  blk: gate
  head: conv(1x1, 2)
}
"""

# an activation's input read by a later add too: conv -> act, and the conv's output again
SECOND_USER = """
block tail() {
  silu
  add { identity }
}
net second_user(input_size=4x8x8) {
  input input_size
  stem: conv(3x3, 4, bias=true)
  blk: tail
}
"""


def assert_epilogue(node, act: str, attrs: dict) -> None:
    assert epilogue_act(node.attrs) == (act, attrs)


@pytest.mark.parametrize("text", list(ACTS))
def test_eval_fuses_conv_bn_act_and_conv_bn_add_act(text: str) -> None:
    act, attrs = ACTS[text]
    spec = spec_with(text)
    after, want, got = eval_pair(spec, torch.float64)
    g = after.graph
    assert not [n for n in g.nodes() if n.op in ("bn", "add") or OPS[n.op].family == "act"]
    stem, c = g.node("stem"), g.node("blk.c")
    assert stem.op == c.op == "fused_conv" and stem.attrs["folded_bn"] == "sb" and c.attrs["folded_bn"] == "blk.b"
    assert not stem.attrs["residual"] and c.attrs["residual"] and c.inputs == ("stem", "stem")
    assert_epilogue(stem, act, attrs)
    assert_epilogue(c, act, attrs)
    assert g.node("head").op == "conv"
    both_paths(want, got, SHAPE, torch.float64)
    _, want32, got32 = eval_pair(spec, torch.float32)
    both_paths(want32, got32, SHAPE, torch.float32)


@pytest.mark.parametrize("text", list(ACTS))
def test_train_fuses_bn_act_and_bn_add_act(text: str) -> None:
    act, attrs = ACTS[text]
    after, want, got = train_pair(spec_with(text))
    g = after.graph
    assert after.passes.records[1].changes == 2
    sb, b = g.node("sb"), g.node("blk.b")
    assert sb.op == b.op == "bn_act" and not sb.attrs["residual"] and b.attrs["residual"]
    assert_epilogue(sb, act, attrs)
    assert_epilogue(b, act, attrs)
    assert not [n for n in g.nodes() if n.op in ("bn", "add") or OPS[n.op].family == "act"]
    same_outputs(want, got, SHAPE, torch.float64)
    same_training_step(want, got, SHAPE)


def test_nothing_fuses_across_the_se_gate() -> None:
    after, want, got = eval_pair(SE, torch.float64)
    g = after.graph
    # the BN folds (its conv's output has one user) but the sigmoid stays: the add reads the BN's value too
    assert ops(g)["stem"] == "fused_conv" and g.node("stem").attrs["act"] == "none"
    assert ops(g)["blk.sigmoid"] == "sigmoid" and ops(g)["blk.add"] == "add"
    both_paths(want, got, SHAPE, torch.float64)
    after, want, got = train_pair(SE)
    assert ops(after.graph)["sb"] == "bn" and ops(after.graph)["blk.sigmoid"] == "sigmoid"
    same_training_step(want, got, SHAPE)


def test_nothing_fuses_into_a_conv_whose_output_is_read_again() -> None:
    after, want, got = eval_pair(SECOND_USER, torch.float64)
    g = after.graph
    assert ops(g)["stem"] == "conv" and ops(g)["blk.silu"] == "silu"
    both_paths(want, got, SHAPE, torch.float64)


def test_fused_ops_refuse_act_attributes_of_another_activation() -> None:
    after, *_ = eval_pair(spec_with("leaky_relu(0.2)"), torch.float64)
    g = after.graph
    node = g.node("stem")
    node.attrs.pop("act_slope")
    with pytest.raises(OpProblem, match="act_slope"):
        g.lint()
    node.attrs.update(act="relu", act_slope=0.2)
    with pytest.raises(OpProblem, match="act_slope"):
        g.lint()


@pytest.mark.parametrize("text", ["hardswish", "leaky_relu(0.2)", "gelu(approximate=tanh)"])
def test_the_interpreter_runs_every_fused_epilogue(text: str) -> None:
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for pair in (lambda s: eval_pair(s, torch.float64), train_pair):
        after, want, got = pair(spec_with(text))
        assert any(n.op in ("fused_conv", "bn_act") and n.attrs["act"] != "none" for n in after.graph.nodes())
        with torch.no_grad():
            torch.testing.assert_close(Interpreter(after.graph, got.state_dict()).run(x), want(x))
