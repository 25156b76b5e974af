"""fuse_eval and fuse_train: activations and residual adds fold into their producers.

Each case checks the rewrite (or its absence), that the graph lints, and equal outputs of the
optimised and the unoptimised module loaded from the same random state_dict (the unoptimised
module's key space). fuse_eval lowers to FusedConv2d, which runs one oneDNN call in float32
CPU inference and eager ops otherwise; both paths are compared. fuse_train must keep every
name, so train-mode outputs, gradients and BN running stats are compared too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from archc.api import build
from tests.passes.test_fold_bn import (
    SPECS,
    TOL,
    one_thread,  # noqa: F401  (autouse fixture)
    ops,
    optimised,
    random_state,
    same_outputs,
    unoptimised,
)

SHAPE = (4, 8, 8)

# main path conv -> bn, identity shortcut: add(bn(conv(x)), x)
MAIN_CONV = """
block res() {
  c: conv(3x3, 4)
  b: bn
  add
  relu
}
net main_conv(input_size=4x8x8) {
  input input_size
  stem: conv(3x3, 4)
  sb: bn
  relu
  blk: res
  head: conv(1x1, 2)
}
"""

# the conv is on the shortcut: add(relu(x), bn(conv(x))), so the conv is the add's second operand
BRANCH_CONV = """
block res() {
  m: maxpool(3x3, /1)
  add {
    c: conv(3x3, 4)
    b: bn
  }
  relu
}
net branch_conv(input_size=4x8x8) {
  input input_size
  stem: conv(3x3, 4)
  sb: bn
  relu
  blk: res
  head: conv(1x1, 2)
}
"""

# two adds of the same block input: the first add must not overwrite it, the second may
TWO_ADDS = """
block res2() {
  c1: conv(3x3, 4)
  b1: bn
  add
  relu
  c2: conv(3x3, 4)
  b2: bn
  add
  relu
}
net two_adds(input_size=4x8x8) {
  input input_size
  stem: conv(3x3, 4)
  sb: bn
  relu
  blk: res2
}
"""

# a conv -> relu without BN (nothing to fold), and a ReLU whose producer has another user
NO_BN = """
block relu_add() {
  relu
  add
}
net no_bn(input_size=4x8x8) {
  input input_size
  c: conv(3x3, 4, bias=true)
  relu
  c2: conv(3x3, 4)
  b2: bn
  blk: relu_add
}
"""


def eval_pair(spec: str | Path, dtype: torch.dtype, passes: list[str] | None = None, overrides=None):
    """(optimised build, unoptimised module, optimised module) from one random state."""
    _, want, state = unoptimised(spec, overrides, dtype=dtype)
    after, got = optimised(spec, state, passes=passes, overrides=overrides, dtype=dtype)
    return after, want, got


def both_paths(want: torch.nn.Module, got: torch.nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """Equal outputs without autograd (FusedConv2d's oneDNN path in float32) and with it (eager ops)."""
    same_outputs(want, got, shape, dtype)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(2), dtype=dtype, requires_grad=True)
    with torch.no_grad():
        a = want(x)
    b = got(x)
    assert b.requires_grad
    torch.testing.assert_close(b.detach(), a, **TOL[dtype])


# --- fuse_eval ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_bn_relu_and_residual_tail_fuse(dtype: torch.dtype) -> None:
    after, want, got = eval_pair(MAIN_CONV, dtype)
    g = after.graph
    assert [r.name for r in after.passes.records] == ["dce", "fold_bn", "fuse_eval", "channels_last"]
    assert after.passes.records[2].changes == 2  # stem+relu, and the block's add+relu
    stem = g.node("stem")
    assert stem.op == "fused_conv" and stem.attrs["act"] == "relu" and not stem.attrs["residual"]
    c = g.node("blk.c")
    assert c.op == "fused_conv" and c.attrs["residual"] and c.attrs["act"] == "relu"
    assert c.attrs["folded_bn"] == "blk.b"
    assert c.inputs == ("stem", "stem")  # conv input, then the residual
    assert set(ops(g).values()) == {"input", "fused_conv", "conv"}  # every bn, add and relu is gone
    assert g.node("head").inputs == ("blk.c",)
    # the block input dies at the fused add, but the conv reads it too: no writing into it
    assert not got.blk.c.into_r and not got.stem.into_r
    both_paths(want, got, SHAPE, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_residual_tail_with_the_conv_as_second_operand(dtype: torch.dtype) -> None:
    before = build(BRANCH_CONV, passes=[], lower=False).graph
    assert before.node("blk.add").inputs == ("blk.m", "blk.b")
    after, want, got = eval_pair(BRANCH_CONV, dtype)
    c = after.graph.node("blk.c")
    assert c.op == "fused_conv" and c.attrs["residual"] and c.attrs["act"] == "relu"
    assert len(c.inputs) == 2 and c.inputs == ("stem", "blk.m")  # the add's other operand is the residual
    assert "blk.add" not in after.graph and after.graph.node("head").inputs == ("blk.c",)
    assert got.blk.c.into_r  # the maxpool output dies here
    both_paths(want, got, SHAPE, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_residual_read_later_is_not_overwritten(dtype: torch.dtype) -> None:
    after, want, got = eval_pair(TWO_ADDS, dtype)
    g = after.graph
    assert g.node("blk.c1").inputs == ("stem", "stem") and g.node("blk.c2").inputs == ("blk.c1", "stem")
    assert g.node("blk.c1").attrs["residual"] and g.node("blk.c2").attrs["residual"]
    # c1's add reads the block input, which c2's add reads again: c1 must not write into it
    assert not got.blk.c1.into_r and got.blk.c2.into_r
    both_paths(want, got, SHAPE, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_relu_without_bn_and_relu_with_another_user(dtype: torch.dtype) -> None:
    after, want, got = eval_pair(NO_BN, dtype)
    g = after.graph
    c = g.node("c")
    assert c.op == "fused_conv" and c.attrs["act"] == "relu" and c.attrs["folded_bn"] is None
    assert c.attrs["conv_bias"] and c.attrs["bias"]
    # c2 + b2 fold, but its output feeds both the ReLU and the add: neither fuses
    c2 = g.node("c2")
    assert c2.op == "fused_conv" and c2.attrs["act"] == "none" and not c2.attrs["residual"]
    assert ops(g)["blk.relu"] == "relu" and ops(g)["blk.add"] == "add"
    assert sorted(g.users("c2")) == ["blk.add", "blk.relu"]
    both_paths(want, got, SHAPE, dtype)


def test_fuse_eval_alone_needs_no_fold() -> None:
    # without fold_bn a conv followed by a BN is not fused; its ReLU comes after the BN
    after, want, got = eval_pair(MAIN_CONV, torch.float64, passes=["fuse_eval"])
    assert ops(after.graph)["stem"] == "conv" and ops(after.graph)["sb"] == "bn"
    assert after.passes.records[0].changes == 0
    same_outputs(want, got, SHAPE, torch.float64)


def test_eval_pipeline_on_resnet18_option_a() -> None:
    # option A shortcuts subsample and pad: views and copies that a fused add must never overwrite
    overrides = {"input_size": "3x32x32", "shortcut": "A"}
    after, want, got = eval_pair(SPECS / "resnet18.arch", torch.float32, overrides=overrides)
    stage2 = getattr(got.layer2, "0")
    assert after.graph.node("layer2.0.conv2").inputs[1] == "layer2.0.downsample.pad"
    assert not stage2.conv2.into_r and getattr(got.layer2, "1").conv2.into_r
    both_paths(want, got, (3, 32, 32), torch.float32)


# --- fuse_train --------------------------------------------------------------------------


def train_pair(spec: str | Path, overrides=None, seed: int = 0):
    """(optimised build, unoptimised module, optimised module), float64, same random state."""
    _, want, state = unoptimised(spec, overrides, seed=seed)
    after, got = optimised(spec, state, mode="train", overrides=overrides)
    assert [r.name for r in after.passes.records] == ["dce", "fuse_train", "channels_last"]
    return after, want, got


def same_training_step(want: torch.nn.Module, got: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """Train-mode forward: equal outputs, running stats, parameter and input gradients."""
    assert list(got.state_dict()) == list(want.state_dict())  # same keys, same order
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    want.train()
    got.train()
    a, b = want(xa), got(xb)
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    w = torch.randn(a.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (a * w).sum().backward()
    (b * w).sum().backward()
    scale = max(1.0, xa.grad.abs().max().item())
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-10, atol=1e-10 * scale)
    params = dict(got.named_parameters())
    for name, p in want.named_parameters():
        scale = max(1.0, p.grad.abs().max().item())
        torch.testing.assert_close(params[name].grad, p.grad, rtol=1e-10, atol=1e-10 * scale, msg=name)
    sa, sb = want.state_dict(), got.state_dict()
    for name, _ in want.named_buffers():
        torch.testing.assert_close(sb[name], sa[name], rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("spec", [MAIN_CONV, BRANCH_CONV], ids=["bn_first", "bn_second"])
def test_fuse_train_bn_relu_and_bn_add_relu(spec: str) -> None:
    after, want, got = train_pair(spec)
    g = after.graph
    assert after.passes.records[1].changes == 2
    sb, b = g.node("sb"), g.node("blk.b")
    assert sb.op == "bn_act" and not sb.attrs["residual"] and sb.inputs == ("stem",)
    assert b.op == "bn_act" and b.attrs["residual"] and len(b.inputs) == 2
    assert b.inputs == (("blk.c", "sb") if spec == MAIN_CONV else ("blk.c", "blk.m"))
    assert "blk.add" not in g and not [n for n in g.nodes() if n.op in ("relu", "add", "bn")]
    assert isinstance(got.blk.b, torch.nn.BatchNorm2d)  # the BN keeps its module and name
    same_outputs(want, got, SHAPE, torch.float64)  # eval mode, running stats
    same_training_step(want, got, SHAPE)


def test_fuse_train_keeps_a_relu_whose_producer_has_another_user() -> None:
    after, want, got = train_pair(NO_BN)
    g = after.graph
    assert ops(g)["b2"] == "bn" and ops(g)["blk.relu"] == "relu" and ops(g)["blk.add"] == "add"
    assert ops(g)["c"] == "conv"  # conv -> relu without BN: nothing for fuse_train
    same_training_step(want, got, SHAPE)


def test_fuse_train_on_cifar_resnet20() -> None:
    after, want, got = train_pair(SPECS / "cifar" / "resnet20.arch")
    g = after.graph
    bn_acts = [n for n in g.nodes() if n.op == "bn_act"]
    assert len(bn_acts) == 19 and sum(n.attrs["residual"] for n in bn_acts) == 9
    assert set(got.state_dict()) == set(random_state(want))
    same_training_step(want, got, (3, 32, 32))


def test_eval_source_is_standalone_torch() -> None:
    """The fused convs' module class is part of the generated source, which imports only torch."""
    _, want, got = eval_pair(TWO_ADDS, torch.float32)
    src = got.archc_source
    tree = ast.parse(src)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"torch"} and "class FusedConv2d(nn.Conv2d)" in src
    namespace: dict = {}
    exec(compile(src, "<eval source>", "exec"), namespace)  # no archc needed to run it
    fresh = namespace["TwoAdds"]().eval()
    fresh.load_state_dict(got.state_dict())
    same_outputs(want, fresh, SHAPE, torch.float32)
    assert "FusedConv2d" not in build(TWO_ADDS, passes=["dce", "fuse_train"]).module.archc_source
