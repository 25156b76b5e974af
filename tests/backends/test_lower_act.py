"""Torch lowering of the activations: torch's own functions in float64, gradients, ONNX, pictures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import archc
from archc.bench.reference import randomise
from archc.cli import main
from archc.ir.activations import ACTIVATIONS, activation_expr, activation_fn

# (spec call, torch's function, the nn module a labelled layer must be): written out by hand,
# not read from the table, so a wrong table entry fails here
CASES = [
    ("relu6", F.relu6, torch.nn.ReLU6),
    ("sigmoid", torch.sigmoid, torch.nn.Sigmoid),
    ("hardsigmoid", F.hardsigmoid, torch.nn.Hardsigmoid),
    ("silu", F.silu, torch.nn.SiLU),
    ("hardswish", F.hardswish, torch.nn.Hardswish),
    ("gelu", F.gelu, torch.nn.GELU),
    ("gelu(approximate=none)", F.gelu, torch.nn.GELU),
    ("gelu(approximate=tanh)", lambda t: F.gelu(t, approximate="tanh"), torch.nn.GELU),
    ("tanh", torch.tanh, torch.nn.Tanh),
    ("leaky_relu", lambda t: F.leaky_relu(t, 0.01), torch.nn.LeakyReLU),
    ("leaky_relu(0.2)", lambda t: F.leaky_relu(t, 0.2), torch.nn.LeakyReLU),
    ("leaky_relu(slope=1)", lambda t: t, torch.nn.LeakyReLU),
]
IDS = [c[0] for c in CASES]


def _spec(call: str) -> str:
    # the same activation unlabelled (a call in forward) then labelled (a module)
    return f"net act() {{\n  input 2x3x5\n  {call}\n  named: {call}\n}}\n"


def _input() -> torch.Tensor:
    # spans every piece of the piecewise ones (relu6 clips at 0 and 6, the hard ones at -3 and 3)
    return torch.linspace(-8, 8, 2 * 2 * 3 * 5, dtype=torch.float64).reshape(2, 2, 3, 5)


@pytest.mark.parametrize(("call", "fn", "module"), CASES, ids=IDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_compiled_module_equals_torch_in_float64(call: str, fn, module: type, mode: str) -> None:
    m = archc.compile(_spec(call), mode=mode).double()
    assert isinstance(m.get_submodule("named"), module)
    assert [name for name, _ in m.named_children()] == ["named"]  # the unlabelled one is a call
    x = _input()
    y = m(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, fn(fn(x)), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("call", "fn", "module"), CASES, ids=IDS)
def test_gradients_flow_in_train_mode(call: str, fn, module: type) -> None:
    m = archc.compile(_spec(call)).double().train()
    x = _input().requires_grad_()
    m(x).sum().backward()
    ref = _input().requires_grad_()
    fn(fn(ref)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, ref.grad, rtol=0, atol=1e-12)


def test_generated_code_uses_torch_functions_and_modules() -> None:
    src = archc.compile(_spec("leaky_relu(0.2)")).archc_source
    assert "leaky_relu = F.leaky_relu(x, negative_slope=0.2)" in src
    assert "self.named = nn.LeakyReLU(negative_slope=0.2)" in src
    src = archc.compile(_spec("gelu(approximate=tanh)")).archc_source
    assert "F.gelu(x, approximate='tanh')" in src and "nn.GELU(approximate='tanh')" in src


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_table_callable_and_in_place_forms_equal_the_functional_one(name: str) -> None:
    attrs = {"slope": 0.2} if name == "leaky_relu" else {"approximate": "tanh"} if name == "gelu" else {}
    x = _input()
    want = eval(activation_expr(name, "x", attrs), {"torch": torch, "F": F, "x": x})  # the generated-code text
    torch.testing.assert_close(activation_fn(name, attrs)(x), want, rtol=0, atol=0)
    y = x.clone()
    got = eval(activation_expr(name, "y", attrs, inplace=True), {"torch": torch, "F": F, "y": y})
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    if ACTIVATIONS[name].inplace is not None:
        assert got.data_ptr() == y.data_ptr()  # really in place


ONNX_CALLS = ["relu", "relu6", "sigmoid", "hardsigmoid", "silu", "hardswish", "gelu", "gelu(approximate=tanh)"]
ONNX_CALLS += ["tanh", "leaky_relu(0.2)"]
# every activation after a random conv (so each sees a spread of values), every other one labelled
ONNX_NET = (
    "net every_act() {\n  input 3x6x6\n"
    + "".join(f"  conv(3x3, 4, bias=true)\n  {f'a{i}: ' if i % 2 else ''}{c}\n" for i, c in enumerate(ONNX_CALLS))
    + "}\n"
)


def _onnx_pair(exporter: str) -> None:
    import onnx  # noqa: F401  (test dependencies: a missing one must fail, not skip)
    import onnxruntime  # noqa: F401

    assert {c.split("(")[0] for c in ONNX_CALLS} == set(ACTIVATIONS)
    assert all(a.onnx for a in ACTIVATIONS.values())  # else: test the export error for those instead
    torch.manual_seed(0)
    state = randomise(archc.compile(ONNX_NET), 0).state_dict()
    want = archc.compile(ONNX_NET, mode="eval", weights=state)
    got = archc.compile(
        ONNX_NET, mode="eval", weights=state, backend="onnxruntime", backend_options={"exporter": exporter}
    )
    x = torch.randn(3, 3, 6, 6) * 3
    with torch.no_grad():
        ref = want(x)
    assert ref.std() > 0.01  # the net does not squash everything to a constant
    torch.testing.assert_close(got(x), ref, rtol=0, atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_of_every_activation_runs_in_onnxruntime() -> None:
    _onnx_pair("legacy")  # the TorchScript-based exporter: a second, not twenty


@pytest.mark.slow
def test_onnx_export_of_every_activation_with_the_default_exporter() -> None:
    _onnx_pair("dynamo")


def test_archc_graph_labels(tmp_path: Path) -> None:
    spec = tmp_path / "acts.arch"
    spec.write_text(
        "net acts() {\n  input 3x8x8\n  hardswish\n  g: gelu(approximate=tanh)\n  leaky_relu(0.2)\n  silu\n}\n"
    )
    out = tmp_path / "acts.dot"
    r = CliRunner().invoke(main, ["graph", str(spec), "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    dot = out.read_text()
    for label in ('label="hardswish', 'label="gelu, tanh', 'label="leaky_relu, 0.2', 'label="silu'):
        assert label in dot, dot
