"""Shared checks for the lowering tests of new ops: float64 modules, the interpreter, labels, ONNX, `build --json`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

import archc
from archc.api import build
from archc.cli import main
from archc.ir import Interpreter
from archc.viz import node_label

TOL = 1e-4


def net(text: str, mode: str = "train", seed: int = 0) -> torch.nn.Module:
    """The compiled float64 module of spec text, with every parameter randomised (seeded)."""
    torch.manual_seed(seed)
    m = archc.compile(text, mode=mode).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.rand_like(p) + 0.5)
    return m


def labels(text: str) -> dict[str, str]:
    """Layer name -> its picture label in `archc graph`."""
    return {n.name: node_label(n) for n in build(text, lower=False).graph.nodes()}


def onnx_error(text: str, exporter: str = "legacy") -> float:
    """Largest |onnxruntime - torch| over two batches, relative to max(1, |torch|), with random weights."""
    torch.manual_seed(0)
    state = archc.compile(text).state_dict()
    with torch.no_grad():
        for v in state.values():
            if v.is_floating_point():
                v.copy_(torch.rand_like(v) + 0.5)
    want = archc.compile(text, mode="eval", weights=state)
    got = archc.compile(text, mode="eval", weights=state, backend="onnxruntime", backend_options={"exporter": exporter})
    shape = build(text, lower=False).graph.input.shape
    worst = 0.0
    with torch.inference_mode():
        for batch in (2, 3):
            x = torch.randn(batch, *shape)
            w = want(x)
            worst = max(worst, ((got(x) - w).abs().max() / max(1.0, w.abs().max().item())).item())
    return worst


def json_params(text: str, tmp_path: Path) -> int:
    """The `params` that `archc build SPEC --json` reports."""
    spec = tmp_path / "net.arch"
    spec.write_text(text, encoding="utf-8")
    r = CliRunner().invoke(main, ["build", str(spec), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["params"]


def interpreter_error(text: str, mode: str, shape: tuple[int, ...], seed: int = 5) -> float:
    """Largest |Interpreter - module| on one float64 batch, both run after torch.manual_seed(seed)."""
    b = build(text, mode=mode)
    module = b.module.double().train(mode == "train")
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand_like(p) + 0.5)
    x = torch.randn(8, *shape, dtype=torch.float64)
    torch.manual_seed(seed)
    want = module(x)
    torch.manual_seed(seed)
    got = Interpreter(b.graph, module.state_dict()).run(x, train=mode == "train")
    return (got - want).abs().max().item()
