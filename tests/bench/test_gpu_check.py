"""benchmarks/gpu_check.py, the prepared device check: its CPU dry run and its machinery."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import gpu_check_report  # noqa: E402

PHASES = ["env", "kernels", "resnet", "throughput"]


def _run(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    path = out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return proc, rows


@pytest.mark.slow
def test_smoke_run_passes_every_phase_in_order(tmp_path: Path) -> None:
    proc, rows = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    phases = [r["phase"] for r in rows]
    assert sorted(set(phases), key=phases.index) == PHASES  # in this order, each present
    assert phases == sorted(phases, key=PHASES.index)
    by = {r["name"]: r for r in rows}
    assert {"torch", "triton"} <= set(by["versions"]["backends"])
    for r in rows:
        if r["phase"] in ("kernels", "resnet"):
            assert r["status"] == "pass", r
    kernels = [r for r in rows if r["phase"] == "kernels"]
    assert {r["name"].split()[0] for r in kernels} == {"fused_conv", "bn_act", "bn_act_conv_unit", "act"}
    assert all(r["dispatch"] == {"kernel": 1} for r in kernels if r["name"].startswith("fused_conv"))
    for cand in ("eager", "archc[torch]", "archc[triton]"):
        for mode in ("train", "eval"):
            row = by[f"{cand} {mode}"]
            assert row["status"] == "ok" and row["img_per_s"] > 0, row
    assert by["archc[triton] eval"]["fallbacks"] == 0
    assert by["torch.compile train"]["status"] == "skipped"
    text = gpu_check_report.render(gpu_check_report.load(tmp_path / "results.jsonl"), "results.jsonl")
    assert "`specs/cifar/resnet20.arch`, batch 2" in text and "0 fallbacks" in text
    assert "correctness checks: 9 pass" in text and "not measured yet" not in text


def test_report_without_results_says_not_measured_yet() -> None:
    text = gpu_check_report.render(None)
    assert text.count("not measured yet") == 10 and "img/s" not in text  # 4 candidates x 2 modes, 2 notes


def test_a_spent_budget_skips_each_measurement_and_says_why(tmp_path: Path) -> None:
    proc, rows = _run(tmp_path, "--budget-s", "0.01")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(rows) > 10 and all(r["status"] == "skipped" for r in rows)
    assert all("left" in r["reason"] or r["reason"] == "--smoke" for r in rows)


def test_backends_are_registered_without_an_installed_archc(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the device machine archc is not pip-installed: the script registers the in-tree backends."""
    real = importlib.metadata.entry_points

    def without_archc(**kw):
        return [ep for ep in real(**kw) if ep.dist is None or ep.dist.name != "archc"]

    monkeypatch.setattr(importlib.metadata, "entry_points", without_archc)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import gpu_check

    assert not [ep for ep in without_archc(group="archc.backends") if ep.name in ("torch", "triton")]
    assert gpu_check.ensure_backends() == ["torch", "triton"]
    eps = {ep.name: ep for ep in without_archc(group="archc.backends")}
    assert eps["triton"].dist.name == "archc-gpu-check" and eps["triton"].value == "archc_triton:TritonBackend"
    assert eps["torch"].load().__name__ == "TorchBackend"
