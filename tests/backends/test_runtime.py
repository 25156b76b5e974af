"""The runtime of the generated torch source (archc_torch/runtime.py): its maths, and codegen copies it verbatim."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backend import get_backend
from archc_torch import runtime
from archc_torch.codegen import HEADER, HELPERS, PRELUDE, runtime_pieces
from archc_torch.runtime import FrozenBatchNorm2d, FusedConv2d, Scope, init_weights

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "backends" / "archc_torch" / "runtime.py"
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}

FROZEN = "net frozen() {\n  input 3x8x8\n  c1: conv(3x3, 6)\n  b1: frozen_bn\n  relu\n}\n"


def _reference(conv: torch.nn.Conv2d, x: torch.Tensor, r: torch.Tensor | None, relu: bool) -> torch.Tensor:
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if r is not None:
        y = y + r
    return y.relu() if relu else y


def _onednn_path(x: torch.Tensor, grad: bool) -> bool:
    """Whether FusedConv2d.forward takes its one-call oneDNN path for x (see its docstring)."""
    return runtime.ONEDNN and x.dtype == torch.float32 and not grad and torch.backends.mkldnn.enabled


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("act", ["none", "relu"])
@pytest.mark.parametrize("residual", ["none", "add", "into_r"])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_conv_is_conv_bias_add_relu(dtype: torch.dtype, grad: bool, act: str, residual: str, bias: bool) -> None:
    torch.manual_seed(0)
    conv = FusedConv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=bias, act=act, into_r=residual == "into_r")
    conv = conv.to(dtype)
    x = torch.randn(2, 4, 9, 9, dtype=dtype, requires_grad=grad)
    r = torch.randn(2, 6, 5, 5, dtype=dtype, requires_grad=grad) if residual != "none" else None
    r_arg = r.detach().clone().requires_grad_(grad) if r is not None else None  # into_r may overwrite it
    with torch.set_grad_enabled(grad):
        got = conv(x, r_arg)
        want = _reference(conv, x, r, act == "relu")
    tol = TOL[dtype]
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    if act == "relu":
        assert bool((got == 0).any()) and bool((got > 0).any())
    if residual == "into_r" and _onednn_path(x, grad):
        assert got.data_ptr() == r_arg.data_ptr()  # the result was written into r
    if grad:
        g = torch.randn_like(want)
        inputs = [x, conv.weight, *([conv.bias] if bias else [])]
        got_grads = torch.autograd.grad(got, [*inputs, *([r_arg] if r is not None else [])], g)
        want_grads = torch.autograd.grad(want, [*inputs, *([r] if r is not None else [])], g)
        for a, b in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_fused_conv_takes_channels_last_input() -> None:
    torch.manual_seed(1)
    conv = FusedConv2d(8, 8, 1, act="relu", into_r=True).to(memory_format=torch.channels_last)
    x = torch.randn(3, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    r = torch.randn(3, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = _reference(conv, x, r, relu=True)
        got = conv(x, r.clone())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _frozen(dtype: torch.dtype) -> FrozenBatchNorm2d:
    g = torch.Generator().manual_seed(2)
    bn = FrozenBatchNorm2d(5, eps=1e-3).to(dtype)
    for name in ("weight", "bias", "running_mean"):
        getattr(bn, name).copy_(torch.randn(5, generator=g))
    bn.running_var.copy_(torch.rand(5, generator=g) + 0.5)
    return bn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frozen_bn_is_eval_batch_norm_in_train_and_eval(dtype: torch.dtype) -> None:
    bn = _frozen(dtype)
    x = torch.randn(4, 5, 3, 3, dtype=dtype)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    want = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=1e-3)
    tol = TOL[dtype]
    torch.testing.assert_close(bn.eval()(x), want, rtol=tol, atol=tol)
    torch.testing.assert_close(bn.train()(x), want, rtol=tol, atol=tol)
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())  # no statistics update
    assert not list(bn.parameters())
    ref = torch.nn.BatchNorm2d(5, eps=1e-3).to(dtype)
    assert list(bn.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(bn.state_dict())
    torch.testing.assert_close(ref.eval()(x), want, rtol=tol, atol=tol)
    assert repr(bn) == "FrozenBatchNorm2d(5, eps=0.001)"


def test_init_weights_is_he_normal_fan_out_and_unit_bn() -> None:
    torch.manual_seed(3)
    model = Scope()
    model.conv = torch.nn.Conv2d(16, 64, 3, bias=True)
    model.fused = FusedConv2d(16, 64, 3, act="relu")
    model.bn = torch.nn.BatchNorm2d(64)
    model.frozen = _frozen(torch.float32)
    model.fc = torch.nn.Linear(64, 10)
    with torch.no_grad():
        for p in [*model.conv.parameters(), *model.fused.parameters(), *model.bn.parameters()]:
            p.uniform_(1.0, 2.0)
    untouched = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("frozen.", "fc.", "bn.running"))}
    init_weights(model)
    for conv in (model.conv, model.fused):
        w = conv.weight
        assert abs(w.mean().item()) < 0.003
        assert w.std().item() == pytest.approx((2.0 / (64 * 3 * 3)) ** 0.5, rel=0.05)  # fan_out = out * k * k
        assert torch.equal(conv.bias, torch.zeros(64))
    assert torch.equal(model.bn.weight, torch.ones(64)) and torch.equal(model.bn.bias, torch.zeros(64))
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in untouched.items())  # linear, frozen BN, BN statistics


def _source(spec: str, mode: str, **kw: object) -> str:
    return get_backend("torch").source(archc.build(spec, mode=mode, lower=False, **kw).graph)


def _runtime_part(src: str) -> str:
    """The text between the generated header and the net's class."""
    header = HEADER.format(origin="a spec", summary=src.splitlines()[1][2:], imports="")
    assert src.startswith(header)
    return src[len(header) : src.rindex("\n\n\nclass ") + 1]  # the net's class is the last one


@pytest.mark.parametrize(
    ("spec", "mode", "kw", "helpers"),
    [
        (FROZEN, "train", {}, ["FrozenBatchNorm2d"]),
        ("specs/cifar/resnet20.arch", "eval", {"overrides": {"input_size": "3x16x16"}}, ["FusedConv2d"]),
        ("specs/cifar/resnet20.arch", "train", {}, []),
    ],
)
def test_generated_source_holds_runtime_py_verbatim(spec: str, mode: str, kw: dict, helpers: list[str]) -> None:
    src = _source(spec, mode, **kw)
    pieces = runtime_pieces()
    names = [*PRELUDE, *(name for h in helpers for name in HELPERS[h])]
    assert _runtime_part(src) == "\n\n".join(pieces[n] for n in names)
    for n in set(pieces) - set(names):
        assert pieces[n] not in src  # helpers only when a lowering asks for them


def test_runtime_pieces_are_runtime_py_definitions() -> None:
    text = RUNTIME.read_text(encoding="utf-8")
    pieces = runtime_pieces()
    # every definition of runtime.py is inlined by some lowering, and every inlined name is defined there
    assert set(pieces) == {*PRELUDE, *(name for names in HELPERS.values() for name in names)}
    for name, piece in pieces.items():
        assert piece in text and piece.endswith("\n")
        (stmt,) = ast.parse(piece).body
        defined = stmt.name if isinstance(stmt, (ast.ClassDef, ast.FunctionDef)) else stmt.targets[0].id
        assert defined == name and hasattr(runtime, name)
    # what the pieces import, the generated header imports too
    header = HEADER.format(origin="", summary="", imports="")
    for stmt in ast.parse(text).body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            assert ast.unparse(stmt) in header


def test_generating_source_does_not_load_torch() -> None:
    code = (
        "import sys, archc\n"
        "from archc.backend import get_backend\n"
        "g = archc.build('specs/cifar/resnet20.arch', mode='eval', lower=False).graph\n"
        "src = get_backend('torch').source(g)\n"
        "assert 'class FusedConv2d(nn.Conv2d)' in src and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
