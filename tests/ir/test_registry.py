"""The op registry: an op is one entry plus one lowering method, and every consumer asks the registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import archc
import archc.api
from archc.cli import main
from archc.errors import BackendError
from archc.ir import OPS, Interpreter, OpSpec, register, surface_ops, unregister
from archc.ir.registry import FRESH, symbol_values
from archc.viz import node_label
from archc_torch.codegen import Lowering

SPEC = """
net tiny(classes=5) {
  input 3x8x8
  conv1: conv(3x3, 4)
  softsign_t
  gate: softsign_t
  avgpool
  flatten
  fc: linear(classes)
}
"""


def _same(a: dict, ins: list) -> tuple:
    return ins[0]


@pytest.fixture
def softsign_op(monkeypatch: pytest.MonkeyPatch):
    """A throwaway one-input elementwise op: one registry entry and one lowering method, nothing else."""
    register(
        OpSpec(
            name="softsign_t",
            arity=1,
            shape=_same,
            label=lambda a: "softsign",
            elementwise=True,
            family="act",
            doc="x / (1 + |x|)",
        )
    )

    def softsign_t(self, n, ins):  # noqa: ANN001, ANN202 - the lowering method a contributor writes
        return None, f"F.softsign({ins[0]})"

    monkeypatch.setattr(Lowering, "softsign_t", softsign_t, raising=False)
    yield "softsign_t"
    unregister("softsign_t")


def test_a_new_elementwise_op_compiles_end_to_end(softsign_op: str, tmp_path: Path) -> None:
    spec = tmp_path / "tiny.arch"
    spec.write_text(SPEC)
    assert softsign_op in surface_ops()

    # build (CLI, JSON) and compile (API): the op is elaborated, counted, passed through both pipelines and lowered
    r = CliRunner().invoke(main, ["build", str(spec), "--json", "--mode", "eval"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["params"] == 4 * 3 * 9 + 4 * 5 + 5
    for mode in ("train", "eval"):
        model = archc.compile(spec, mode=mode).eval()
        x = torch.randn(2, 3, 8, 8)
        conv = torch.nn.functional.conv2d(x, model.conv1.weight, model.conv1.bias, padding=1)
        want = model.fc(torch.nn.functional.softsign(torch.nn.functional.softsign(conv)).mean((2, 3)))
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6)
        assert "F.softsign(" in model.archc_source

    # graph: the picture's label comes from the registry entry
    r = CliRunner().invoke(main, ["graph", str(spec), "-o", str(tmp_path / "g.dot")])
    assert r.exit_code == 0, r.output
    assert '"softsign"' in (tmp_path / "g.dot").read_text()

    # export: ONNX, checked in onnxruntime by the command itself
    out = tmp_path / "tiny.onnx"
    r = CliRunner().invoke(main, ["export", str(spec), "--format", "onnx", "-o", str(out), "--onnx-exporter", "legacy"])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 0
    print(r.output)


def test_a_missing_lowering_is_a_located_backend_error(tmp_path: Path) -> None:
    register(OpSpec(name="nolower_t", arity=1, shape=_same, doc="no backend lowers it"))
    try:
        spec = tmp_path / "n.arch"
        spec.write_text("net n {\n  input 3x8x8\n  relu\n  nolower_t\n}\n")
        with pytest.raises(BackendError) as e:
            archc.compile(spec)
        assert "cannot lower op 'nolower_t'" in e.value.message and "n.arch:4:3" in e.value.message
        r = CliRunner().invoke(main, ["build", str(spec)])
        assert r.exit_code == 2 and "Traceback" not in r.output
    finally:
        unregister("nolower_t")


def test_registering_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(OpSpec(name="conv", arity=1, shape=_same))


def test_every_op_declares_a_consistent_entry() -> None:
    for name, spec in OPS.items():
        assert spec.name == name
        assert spec.doc, f"{name} has no doc line"
        assert all(p in spec.attrs for p in spec.positional)
        if spec.branches:
            assert spec.accepts(2), f"{name} takes branches but not two inputs"
        if spec.elementwise:
            assert spec.result == FRESH or name == "identity"
    assert {"none", "tanh", "nearest", "bilinear"} <= symbol_values()  # gelu(approximate=), upsample(mode=)


# One small spec per surface op (what a user writes), so that every op is checked in every backend.
# A new surface op without an example here fails test_every_surface_op_has_an_example.
EXAMPLES = {
    "conv": "conv(3x3, 4, /2, groups=1, bias=true)",
    "bn": "bn",
    "frozen_bn": "frozen_bn",
    "relu": "relu",
    "maxpool": "maxpool(3x3, /2)",
    "avgpool": "avgpool(2x2)",
    "linear": "avgpool; flatten; linear(7)",
    "channel_linear": "channel_linear(6)",
    "flatten": "flatten",
    "identity": "identity",
    "add": "add { conv(1x1, 4) }",
    "subsample": "subsample(/2)",
    "pad": "pad(6)",
    "relu6": "relu6",
    "sigmoid": "sigmoid",
    "hardsigmoid": "hardsigmoid",
    "silu": "silu",
    "hardswish": "hardswish",
    "gelu": "gelu(approximate=tanh)",
    "tanh": "tanh",
    "leaky_relu": "leaky_relu(0.2)",
    "concat": "concat { relu } { conv(1x1, 2) }",
    "mul": "mul { avgpool; conv(1x1, 4); sigmoid }",
    "chunk": "chunk(2, 1)",
    "split": "split(3, 1)",
    "channel_shuffle": "channel_shuffle(2)",
    "layer_norm": "layer_norm",
    "group_norm": "group_norm(2)",
    "layer_scale": "layer_scale(0.5)",
    "dropout": "dropout(0.2)",
    "drop_path": "drop_path(0.2)",
    "upsample": "upsample(scale=2, mode=bilinear)",
    "adaptive_avgpool": "adaptive_avgpool(4)",
    "adaptive_maxpool": "adaptive_maxpool(4)",
}


def _spec_for(op: str) -> str:
    return f"net ex_{op} {{\n  input 4x8x8\n  stem: conv(3x3, 4)\n  bn\n  {EXAMPLES[op]}\n  relu\n}}\n"


def test_every_surface_op_has_an_example() -> None:
    missing = sorted(set(surface_ops()) - set(EXAMPLES))
    assert not missing, f"add an example spec line for {missing} to EXAMPLES"


@pytest.mark.parametrize("op", sorted(EXAMPLES))
def test_every_op_lowers_in_every_in_tree_backend(op: str, tmp_path: Path) -> None:
    """Torch (train and eval pipelines), triton (in the interpreter), the export lowering, and the IR interpreter."""
    from archc.backend import get_backend
    from archc.bench.reference import randomise

    text = _spec_for(op)
    ops = set()
    for mode, passes in (("train", []), ("train", None), ("eval", None)):  # the op itself, then fused forms
        built = archc.api.build(text, mode=mode, passes=passes)
        ops |= {n.op for n in built.graph.nodes()}
        model = built.module.double().eval()
        randomise(model)
        x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
        want = Interpreter(built.graph, model.state_dict()).run(x)
        torch.testing.assert_close(model(x), want, rtol=1e-9, atol=1e-9)
        exported = get_backend("torch").exportable(built.graph).double().eval()
        exported.load_state_dict(model.state_dict())
        torch.testing.assert_close(exported(x), want, rtol=1e-9, atol=1e-9)
        triton = get_backend("triton").source(built.graph)
        assert triton.startswith("# Generated by archc")
    assert op in ops
    for node in built.graph.nodes():
        assert node_label(node)


@pytest.mark.parametrize("op", sorted(EXAMPLES))
def test_every_op_exports_to_onnx_and_runs_in_onnxruntime(op: str, tmp_path: Path) -> None:
    """`archc export` writes the op and checks the file in onnxruntime against the torch backend itself."""
    spec = tmp_path / f"ex_{op}.arch"
    spec.write_text(_spec_for(op))
    out = tmp_path / "ex.onnx"
    r = CliRunner().invoke(main, ["export", str(spec), "-o", str(out), "--onnx-exporter", "legacy"])
    assert r.exit_code == 0, r.output
    m = re.search(r"checked with onnxruntime: max \|difference\| to the torch backend ([0-9.e+-]+)", r.output)
    assert m is not None and float(m.group(1)) < 1e-4, r.output
