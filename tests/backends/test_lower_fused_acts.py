"""Lowering fused ops whose epilogue is any activation: the generated text, and the triton backend's fallback.

The numbers (optimised against unoptimised graphs, eval and train) are tests/passes/test_fuse_acts.py's;
here: what the torch backend writes, and that the triton backend, whose kernels apply ReLU only,
lowers any other activation to the torch form and still computes what the torch backend does.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import archc
from archc.backend import get_backend
from archc.errors import BackendError
from tests.passes.test_fuse_acts import spec_with

SHAPE = (4, 8, 8)


def source(text: str, mode: str, backend: str = "torch") -> str:
    return get_backend(backend).source(archc.build(spec_with(text), mode=mode, lower=False).graph)


def test_torch_writes_the_tables_in_place_activation() -> None:
    train = source("leaky_relu(0.2)", "train")
    assert "F.leaky_relu_(self.sb(stem), negative_slope=0.2)" in train
    assert "F.leaky_relu_(self.blk.b(blk_c).add_(sb), negative_slope=0.2)" in train
    ev = source("silu", "eval")
    assert "FusedConv2d(4, 4, 3, padding=1, bias=True, act='none')" in ev
    assert "F.silu(self.stem(x), inplace=True)" in ev
    assert "F.gelu(self.stem(x), approximate='tanh')" in source("gelu(approximate=tanh)", "eval")  # no gelu_
    relu = source("relu", "eval")  # ReLU stays inside FusedConv2d (its oneDNN call)
    assert "act='relu'" in relu and "torch.relu_" not in relu.split("class Acts")[1]


@pytest.mark.parametrize("text", ["sigmoid", "leaky_relu(0.2)"])
def test_triton_falls_back_to_the_torch_form_for_other_activations(monkeypatch, text: str) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from archc_triton import BNAct, FusedConv

    assert "archc_triton.BNAct" not in source(text, "train", "triton")
    ov = {"input_size": "4x8x8"}
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ref = archc.compile(spec_with(text), backend="torch", mode="train", overrides=ov)
    net = archc.compile(spec_with(text), backend="triton", mode="train", overrides=ov, weights=ref.state_dict())
    assert isinstance(net.sb, nn.BatchNorm2d) and not any(isinstance(m, BNAct) for m in net.modules())
    a, b = ref(x), net(x)
    torch.testing.assert_close(b, a)
    a.sum().backward()
    b.sum().backward()
    grads = dict(ref.named_parameters())
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, msg=name)

    state = ref.state_dict()  # unfolded: each eval compile folds its BNs
    ref = archc.compile(spec_with(text), backend="torch", mode="eval", overrides=ov, weights=state)
    net = archc.compile(spec_with(text), backend="triton", mode="eval", overrides=ov, weights=state)
    assert isinstance(net.stem, FusedConv) and net.stem.act == "none" and net.blk.c.residual
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("key", "value"),
    [("act", "os"), ("act", "print"), ("act_approximate", "tanh'); import os; ('"), ("act_approximate", "erf")],
)
def test_a_tampered_epilogue_is_refused(key: str, value: str) -> None:
    graph = archc.build(spec_with("gelu"), mode="eval", lower=False).graph
    graph.node("stem").attrs[key] = value
    with pytest.raises(BackendError):
        get_backend("torch").source(graph)
