"""Lowering fused ops whose epilogue is any activation: the generated text, and the triton backend's fallback.

The numbers (optimised against unoptimised graphs, eval and train) are tests/passes/test_fuse_acts.py's;
here: what the torch backend writes, and that the triton backend applies every activation in its
kernels (no torch-form split) and computes what the torch backend does.
"""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backend import get_backend
from archc.errors import BackendError
from archc.ir.activations import ACTIVATIONS, torch_kwargs
from tests.passes.test_fuse_acts import ACTS, spec_with

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


@pytest.mark.parametrize("text", list(ACTS))
def test_triton_applies_every_activation_in_its_kernels(monkeypatch, text: str) -> None:
    """Every activation of the table lowers to BNAct / FusedConv with that act (no torch-form split),
    and a train step and an eval run compute what the torch backend does."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from archc_triton import BNAct, FusedConv

    name, attrs = ACTS[text]
    train_src = source(text, "train", "triton")
    assert train_src.count("archc_triton.BNAct(") == 2 and "nn.BatchNorm2d(" not in train_src
    assert name == "relu" or f"act={name!r}" in train_src
    ov = {"input_size": "4x8x8"}
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ref = archc.compile(spec_with(text), backend="torch", mode="train", overrides=ov)
    net = archc.compile(spec_with(text), backend="triton", mode="train", overrides=ov, weights=ref.state_dict())
    bns = [m for m in net.modules() if isinstance(m, BNAct)]
    assert len(bns) == 2 and all(m.act == name for m in bns)
    a, b = ref(x), net(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    grads = dict(ref.named_parameters())
    for pname, p in net.named_parameters():
        torch.testing.assert_close(p.grad, grads[pname].grad, rtol=1e-4, atol=1e-4, msg=pname)
    assert all(m.dispatch_counts() == {"kernel": 1} for m in bns)

    state = ref.state_dict()  # unfolded: each eval compile folds its BNs
    eval_src = source(text, "eval", "triton")
    assert ACTIVATIONS[name].function + "(" not in eval_src  # no activation split off FusedConv
    ref = archc.compile(spec_with(text), backend="torch", mode="eval", overrides=ov, weights=state)
    net = archc.compile(spec_with(text), backend="triton", mode="eval", overrides=ov, weights=state)
    assert isinstance(net.stem, FusedConv) and net.stem.act == name and net.blk.c.residual
    assert net.blk.c.act == name and net.blk.c.kernel_act.keywords() == torch_kwargs(name, attrs)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-4)
    assert net.stem.dispatch_counts() == {"kernel": 1}


@pytest.mark.parametrize(
    ("key", "value"),
    [("act", "os"), ("act", "print"), ("act_approximate", "tanh'); import os; ('"), ("act_approximate", "erf")],
)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_tampered_epilogue_is_refused(key: str, value: str, backend: str) -> None:
    graph = archc.build(spec_with("gelu"), mode="eval", lower=False).graph
    graph.node("stem").attrs[key] = value
    with pytest.raises(BackendError):
        get_backend(backend).source(graph)
