"""channels_last: marks nets that have convolutions; the torch backend then runs them NHWC.

Each case checks the mark (or its absence), that the graph lints, and equal outputs of the
marked module (NCHW input, converted once inside) and the unmarked one from the same state.
"""

from __future__ import annotations

import pytest
import torch

from archc.api import build
from archc.passes import PIPELINES, PassManager
from tests.passes.test_fold_bn import (
    SPECS,
    one_thread,  # noqa: F401  (autouse fixture)
    optimised,
    same_outputs,
    unoptimised,
)

MLP = """
net mlp(input_size=16) {
  input input_size
  fc1: linear(32)
  relu
  fc2: linear(10)
}
"""


def test_a_net_without_convs_stays_as_it_is() -> None:
    _, want, state = unoptimised(MLP)
    for mode in PIPELINES:
        after, got = optimised(MLP, state, mode=mode)
        rec = {r.name: r.changes for r in after.passes.records}
        assert rec["channels_last"] == 0
        assert "memory_format" not in after.graph.meta
        assert "channels_last" not in got.archc_source
        x = torch.randn(3, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(got(x), want(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", list(PIPELINES))
def test_conv_nets_run_channels_last_and_take_nchw(mode: str) -> None:
    spec = SPECS / "cifar" / "resnet20.arch"
    before, want, state = unoptimised(spec)
    assert "memory_format" not in before.graph.meta
    after, got = optimised(spec, state, mode=mode)
    assert after.graph.meta["memory_format"] == "channels_last"
    assert {r.name: r.changes for r in after.passes.records}["channels_last"] == 1
    convs = [m for m in got.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19  # 6n + 1 with n = 3 (option A shortcuts have no conv)
    for conv in convs:
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        if conv.kernel_size != (1, 1):
            assert not conv.weight.is_contiguous()  # really NHWC, not a layout-agnostic shape
    # the unmarked module keeps NCHW weights
    assert not [m for m in want.modules() if isinstance(m, torch.nn.Conv2d) and not m.weight.is_contiguous()]
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert x.is_contiguous()  # an ordinary NCHW batch goes in
    same_outputs(want, got, (3, 32, 32), torch.float64)
    with torch.no_grad():
        y = got(x)
    assert y.shape == (2, 10)
    assert x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)  # input untouched


def test_the_mark_is_idempotent_and_lints() -> None:
    g = build(SPECS / "resnet18.arch", passes=[], lower=False).graph
    pm = PassManager(["channels_last", "channels_last"])
    pm.run(g)
    g.lint()
    assert [r.changes for r in pm.records] == [1, 0]
    assert g.meta["memory_format"] == "channels_last"
    assert g.to_dict()["meta"]["memory_format"] == "channels_last"  # kept in the IR dump


def test_eval_module_keeps_the_callers_channels_last_input() -> None:
    """A channels_last input is used as it is (no copy) and never written to by a fused add."""
    spec = SPECS / "cifar" / "resnet20.arch"
    _, want, state = unoptimised(spec, dtype=torch.float32)
    _, got = optimised(spec, state, dtype=torch.float32)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    keep = x.clone()
    with torch.no_grad():
        y, y_ref = got(x), want(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(x, keep)
