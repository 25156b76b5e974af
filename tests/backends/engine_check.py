"""Shared checks for the inference-engine backends (onnxruntime, openvino): every shipped spec, random weights."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import archc
from archc.bench.reference import randomise
from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
RESNET20 = SPECS / "cifar" / "resnet20.arch"
TOL = 1e-4
FAST = {"exporter": "legacy"}  # the tests export many nets: the TorchScript-based exporter takes seconds, not tens
SLOW = {
    "resnet101", "resnet152", "resnet1202", "faster_rcnn_r101_c4", "preact_resnet1001", "resnext101_32x8d",
    "vgg16_bn",  # 62 s (dynamo)
}  # fmt: skip
SMALL = {"input_size": "3x32x32"}  # ImageNet specs at 32x32: every stage still runs (layer4 is 1x1)
# The legacy exporter refuses an adaptive pool whose size does not divide its input: VGG's
# adaptive_avgpool(7x7) meets a 1x1 map at 32x32 (7x7 needs 224x224), so it takes the dynamo exporter.
EXPORTER = {"vgg16_bn": {"exporter": "dynamo"}}
CALIBRATED = {"resnet1202"}  # randomise's BN statistics overflow float32 in this net (see calibrate)


def specs(skip: frozenset[str] = frozenset()) -> list:
    """Every shipped network spec (not the block libraries) as pytest params, minus the stems in `skip`."""
    out = []
    for path in sorted(SPECS.rglob("*.arch")):
        if path.parent.name == "blocks" or path.stem in skip:
            continue
        marks = [pytest.mark.slow] if path.stem in SLOW else []
        out.append(pytest.param(path, id=str(path.relative_to(SPECS)), marks=marks))
    return out


def overrides_for(spec: Path) -> dict[str, str]:
    if spec.parent.name == "cifar":
        return {"input_size": "3x16x16"}
    if spec.parent.name == "detection":
        return {"input_size": "3x64x64"}
    return SMALL


def calibrate(model: nn.Module, shape: tuple[int, ...], seed: int) -> None:
    """Set every BN's running statistics to those of its input on a random batch, as training leaves them.

    randomise draws running statistics independent of the activations, so a BN at the end of a
    residual branch scales the branch with the stream instead of normalising it, and the stream
    grows geometrically with depth. Measured (2026-11-30, cifar/resnet1202 at 3x16x16, randomise
    seed 0): x1.2 per block, |max| 4e2 after 30 blocks, 1e16 after 200, 3.0e38 after 531, then
    inf and NaN at block 532 of 600 in float32: in eager torch and in onnxruntime at every
    optimisation level (IEEE NaN all the way to the logits), while the torch backend's fused
    conv+ReLU maps NaN to 0 and restarts the stream, so its finite logits were garbage too.
    Statistics measured on the activations (what a trained net holds) keep each branch O(1).
    Only for the nets in CALIBRATED: a deep plain net with measured statistics amplifies the
    engines' different rounding past 1e-4 (plain56: 1.6e-3 on logits of 2.2, measured), while
    randomise's statistics keep it well-conditioned.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *shape, generator=g))
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum


def random_state(spec: Path, overrides: dict, part: str | None = None, seed: int = 0) -> dict:
    """A train-mode (checkpoint key space) state with random weights and BN statistics (measured: CALIBRATED)."""
    torch.manual_seed(seed)
    built = archc.build(spec, overrides=overrides, part=part)
    model = randomise(built.module, seed)
    if spec.stem in CALIBRATED:
        calibrate(model, tuple(built.graph.input.shape), seed)
    return model.state_dict()


def pair(backend: str, spec: Path, overrides: dict, part: str | None = None, **options):
    """The torch backend's eval module and `backend`'s, with the same random weights."""
    state = random_state(spec, overrides, part)
    want = archc.compile(spec, mode="eval", overrides=overrides, part=part, weights=state)
    got = archc.compile(
        spec,
        mode="eval",
        overrides=overrides,
        part=part,
        weights=state,
        backend=backend,
        backend_options={**FAST, **options},
    )
    return want, got


def flat(out) -> list[torch.Tensor]:
    if isinstance(out, dict):
        return [out[k] for k in sorted(out)]
    return list(out) if isinstance(out, tuple) else [out]


def assert_close(got, want) -> None:
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert list(got) == list(want)
    for g, w in zip(flat(got), flat(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = max(1.0, w.abs().max().item())
        assert (g - w).abs().max().item() <= TOL * scale


def check_every_spec(backend: str, spec: Path, batches: tuple[int, ...] = (2, 1, 3)) -> None:
    """`backend` computes what the torch backend computes for `spec` (to TOL), at several batch sizes."""
    overrides = overrides_for(spec)
    want, got = pair(backend, spec, overrides, **EXPORTER.get(spec.stem, {}))
    assert list(got.state_dict()) == list(want.state_dict())
    g = torch.Generator().manual_seed(1)
    shape = tuple(int(s) for s in overrides["input_size"].split("x"))
    for batch in batches:
        x = torch.randn(batch, *shape, generator=g)
        with torch.inference_mode():
            assert_close(got(x), want(x))
    if spec.parent.name == "detection":  # taps: the net returns a dict {res4, head}
        assert isinstance(want(x), dict) and list(want(x)) == ["res4", "head"]


def check_build_writes_a_runner(backend: str, tmp_path: Path, loads: tuple[dict, ...]) -> None:
    """`archc build --backend BACKEND -o` writes NAME.onnx, the runner NAME.py and the weights beside them.

    The runner runs the written ONNX file, and `load(**kwargs)` for each of `loads` computes what the torch
    backend computes with the written weights.
    """
    out = tmp_path / "out"
    args = ["build", str(RESNET20), "--backend", backend, "--mode", "eval", "--set", "input_size=3x16x16"]
    r = CliRunner().invoke(main, [*args, "-o", str(out), "--init"])
    assert r.exit_code == 0, r.output
    assert f"backend {backend}" in r.output
    for name in ("resnet20.onnx", "resnet20.py", "resnet20.safetensors"):
        assert (out / name).is_file(), name
    from safetensors.torch import load_file

    want = archc.compile(RESNET20, mode="eval", overrides={"input_size": "3x16x16"})
    want.load_state_dict(load_file(str(out / "resnet20.safetensors")))
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = want(torch.from_numpy(x)).numpy()
    for kwargs in loads:
        run = runpy.run_path(str(out / "resnet20.py"))["load"](**kwargs)
        np.testing.assert_allclose(run(x), expected, atol=TOL, rtol=0)


def check_bench_beside_torch(backend: str) -> None:
    """`archc bench --backend torch,BACKEND` measures both, and both outputs agree with the interpreter's."""
    args = ["bench", str(RESNET20), "--backend", f"torch,{backend}", "--mode", "eval", "--batch", "2"]
    r = CliRunner().invoke(main, [*args, "--iters", "2", "--warmup", "0", "--set", "input_size=3x16x16", "--json"])
    assert r.exit_code == 0, r.output
    rows = {c["name"]: c for c in json.loads(r.stdout)["candidates"]}
    for name in ("archc[torch]", f"archc[{backend}]"):
        assert rows[name]["status"] == "ok" and rows[name]["output_close"], rows[name]
