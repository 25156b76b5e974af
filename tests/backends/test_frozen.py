"""Lowering of taps and frozen BN: tapped values survive fusion and in-place ops; frozen_bn in both backends."""

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backend import get_backend

# a tapped BN before a ReLU and a tapped residual add before a ReLU: both are fusion candidates
TAPS = """
net taps() {
  input 4x8x8
  c1: conv(3x3, 4)
  b1: bn
  output pre
  r1: relu
  c2: conv(3x3, 4)
  b2: bn
  add
  output sum
  r2: relu
  output out
}
"""

FROZEN = """
net frozen() {
  input 3x8x8
  c1: conv(3x3, 6)
  b1: frozen_bn
  r1: relu
  c2: conv(3x3, 6)
  b2: bn(eps=1e-3)
  relu
}
"""


def _spec(tmp_path, text):
    p = tmp_path / "net.arch"
    p.write_text(text)
    return p


def _randomise(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.rand(v.shape, generator=g) + 0.5 if "var" in k else torch.randn(v.shape, generator=g))


def _reference(state, x, training):
    def bn(y, k):
        return F.batch_norm(
            y,
            state[f"{k}.running_mean"].clone(),
            state[f"{k}.running_var"].clone(),
            state[f"{k}.weight"],
            state[f"{k}.bias"],
            training=training,
        )

    pre = bn(F.conv2d(x, state["c1.weight"], padding=1), "b1")
    total = bn(F.conv2d(pre.relu(), state["c2.weight"], padding=1), "b2") + x
    return {"pre": pre, "sum": total, "out": total.relu()}


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_tapped_bn_and_add_are_not_fused_or_overwritten(tmp_path, mode):
    spec = _spec(tmp_path, TAPS)
    b = archc.build(spec, mode=mode)
    fuse = {r.name: r.changes for r in b.passes.records}[f"fuse_{mode}"]
    assert fuse == 0  # every fusion here would swallow a tap
    untapped = archc.build(_spec(tmp_path, TAPS.replace("output pre", "").replace("output sum", "")), mode=mode)
    assert {r.name: r.changes for r in untapped.passes.records}[f"fuse_{mode}"] == 2
    net = archc.compile(spec)  # train-mode names, so the reference can read the BN state
    _randomise(net, 0)
    state = {k: v.clone().double() for k, v in net.state_dict().items()}
    net = b.module.double()
    archc.load_weights(net, state, b.graph)
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    out = net.train(mode == "train")(x)
    want = _reference(state, x, mode == "train")
    assert list(out) == ["pre", "sum", "out"]
    assert bool((out["pre"] < 0).any()) and bool((out["sum"] < 0).any())  # not ReLU'd in place
    for k in want:
        torch.testing.assert_close(out[k], want[k], rtol=1e-9, atol=1e-9)


def test_frozen_bn_module_has_bn_keys_no_parameters_and_ignores_the_mode(tmp_path):
    b = archc.build(_spec(tmp_path, FROZEN), passes=[])
    m = b.module
    bn = torch.nn.BatchNorm2d(6)
    assert {k: v.shape for k, v in m.b1.state_dict().items()} == {k: v.shape for k, v in bn.state_dict().items()}
    assert not list(m.b1.parameters())
    _randomise(m, 1)
    before = {k: v.clone() for k, v in m.b1.state_dict().items()}
    h = m.c1(torch.randn(4, 3, 8, 8))
    y_train = m.b1.train()(h)
    torch.testing.assert_close(m.b1.eval()(h), y_train, rtol=0, atol=0)
    assert all(torch.equal(before[k], v) for k, v in m.b1.state_dict().items())  # no statistics update
    bn.load_state_dict(before)
    torch.testing.assert_close(m.b1(h), bn.eval()(h), rtol=1e-6, atol=1e-6)
    # freeze_bn leaves a spec's own frozen_bn alone and converts the bn with its eps
    fb = archc.build(_spec(tmp_path, FROZEN), passes=["freeze_bn"], lower=False)
    assert fb.passes.records[0].changes == 1
    assert fb.graph.node("b2").op == "frozen_bn" and fb.graph.node("b2").attrs["eps"] == 1e-3


def test_triton_backend_lowers_frozen_bn(tmp_path):
    b = archc.build(_spec(tmp_path, FROZEN), frozen_bn=True, lower=False)
    src = get_backend("triton").source(b.graph)
    assert "class FrozenBatchNorm2d(nn.Module)" in src and "FrozenBatchNorm2d(6, eps=0.001)" in src
    scope: dict = {}
    exec(compile(src, "<triton source>", "exec"), scope)  # frozen BN, conv and ReLU need no GPU kernels
    net = scope["Frozen"]()
    ref = archc.compile(_spec(tmp_path, FROZEN), frozen_bn=True)
    _randomise(ref, 2)
    net.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(net.train()(x), ref.train()(x), rtol=1e-6, atol=1e-6)
