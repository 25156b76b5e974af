"""The example third-party backend (examples/archc-backend-example) and `archc backends`.

The CLI tests install the example the way a user would: `pip install --no-deps
--no-build-isolation --no-index` into a fresh venv, which sees this interpreter's
packages (torch, archc) through a `.pth` file, so nothing is downloaded. (A venv made
with --system-site-packages from inside a venv sees the base interpreter's packages,
not the outer venv's, hence the `.pth`.) The in-process tests put a copy of the package
and a hand-written `.dist-info` on sys.path instead, which is all entry-point discovery needs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import archc
from archc.backend import available, get_backend
from archc.cli import main
from archc.errors import BackendError
from tests.venvs import make_venv, pip_install

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "archc-backend-example"
SPEC = "specs/cifar/resnet20.arch"
PROJECT = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
GPU_NOTE = "needs a GPU (TRITON_INTERPRET=1 for the CPU interpreter)"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET", "FORCE_COLOR")}
    env["OMP_NUM_THREADS"] = "1"  # tiny forward passes; idle-spinning thread pools only slow a busy machine down
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the example pip-installed from a copy of its directory (the build writes there)."""
    base = tmp_path_factory.mktemp("example_venv")
    src = base / "archc-backend-example"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    python = make_venv(base / "venv", run_pth_files=True)
    pip_install(python, src, _clean_env())
    return python


def _archc(python: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "archc", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_clean_env(**env),
        timeout=300,
    )


@pytest.fixture
def on_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example importable and registered in this process: its package plus a .dist-info."""
    shutil.copytree(EXAMPLE / "archc_example_backend", tmp_path / "archc_example_backend")
    info = tmp_path / f"archc_backend_example-{VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PROJECT['name']}\nVersion: {VERSION}\n")
    eps = PROJECT["entry-points"]["archc.backends"]
    (info / "entry_points.txt").write_text("[archc.backends]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    sys.modules.pop("archc_example_backend", None)
    yield tmp_path
    sys.modules.pop("archc_example_backend", None)


# --- installed with pip, used through the command line ---------------------------------------


def test_archc_backends_lists_the_pip_installed_example(venv_python: Path) -> None:
    proc = _archc(venv_python, "backends", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["backends"]}
    assert rows["example"] == {
        "name": "example",
        "entry_point": "archc_example_backend:ExampleBackend",
        "distribution": "archc-backend-example",
        "version": VERSION,
        "backend_version": VERSION,
        "loads": True,
        "available": True,
        "status": "ok",
    }
    assert rows["torch"]["status"] == "ok"


def test_archc_build_with_the_pip_installed_example(venv_python: Path, tmp_path: Path) -> None:
    proc = _archc(venv_python, "build", "--backend", "example", SPEC, "--json", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["backend"] == "example" and summary["params"] == 269_722
    src = (tmp_path / "resnet20.py").read_text()
    assert src.startswith(f"# Lowered by the archc 'example' backend {VERSION}")
    assert "# ops: bn_act 19, conv 19, pad 2, subsample 2," in src

    code = (
        "import archc, torch\n"
        f"m = archc.compile({SPEC!r}, backend='example')\n"
        "m(torch.randn(2, 3, 32, 32)); m(torch.randn(3, 3, 32, 32))\n"
        "print(m.archc_stats.calls, m.archc_stats.samples, m.archc_backend)\n"
    )
    run = subprocess.run(
        [str(venv_python), "-c", code], capture_output=True, text=True, cwd=ROOT, env=_clean_env(), timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["2", "5", "example", VERSION]


def test_an_unknown_backend_names_the_example(venv_python: Path) -> None:
    proc = _archc(venv_python, "build", "--backend", "exampel", SPEC)
    assert proc.returncode == 2
    assert "unknown backend 'exampel'" in proc.stderr and "did you mean 'example'" in proc.stderr


# --- on sys.path, in process -------------------------------------------------------------------


def test_example_is_discovered_and_versioned(on_sys_path: Path) -> None:
    assert available()["example"].value == "archc_example_backend:ExampleBackend"
    backend = get_backend("example")
    assert backend.name == "example" and backend.version == VERSION
    assert backend.available() is None


def test_build_table_and_backends_table_show_the_example(on_sys_path: Path) -> None:
    r = CliRunner().invoke(main, ["build", "--backend", "example", SPEC], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "269,722" in r.stdout and "backend example" in r.stdout
    r = CliRunner().invoke(main, ["backends"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["example"])
    assert lines[i].split() == ["example", "archc-backend-example", VERSION, "ok"]
    assert lines[i + 1].split() == ["archc_example_backend:ExampleBackend"]  # the entry point, under it
    assert "\x1b[" not in r.stdout


def test_example_lowers_through_torch_and_counts_calls(on_sys_path: Path) -> None:
    torch.manual_seed(0)
    ref = archc.compile(SPEC)
    model = archc.compile(SPEC, backend="example", weights=ref.state_dict())
    # the hook adds no state: the keys are the spec's, so checkpoints move between backends
    assert list(model.state_dict()) == list(ref.state_dict())
    assert model.archc_stats.ops == {
        "bn_act": 19,
        "conv": 19,
        "pad": 2,
        "subsample": 2,
        "avgpool": 1,
        "flatten": 1,
        "linear": 1,
    }
    ref.eval()
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
        model(x[:1])
    assert (model.archc_stats.calls, model.archc_stats.samples) == (2, 5)
    model.archc_stats.reset()
    assert model.archc_stats.calls == 0


def test_example_in_eval_mode_takes_folded_weights(on_sys_path: Path) -> None:
    torch.manual_seed(0)
    ref = archc.compile(SPEC)
    for m in ref.modules():  # non-trivial statistics, so that folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ref.eval()
    model = archc.compile(SPEC, backend="example", mode="eval", weights=ref.state_dict())
    assert model.archc_stats.ops["fused_conv"] == 19 and "bn_act" not in model.archc_stats.ops
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-4)
    assert model.archc_stats.calls == 1


def test_example_logs_op_counts(on_sys_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from archc_example_backend import ExampleBackend

    graph = archc.build(SPEC, lower=False).graph
    with caplog.at_level(logging.INFO, logger="archc_example_backend"):
        model = ExampleBackend().lower(graph, log_every=2)
        for _ in range(4):
            model(torch.randn(1, 3, 32, 32))
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0].startswith("lowered resnet20 (") and "conv 19" in msgs[0]
    forwards = [m for m in msgs if "forward #" in m]
    assert len(forwards) == 2, msgs
    for calls, m in zip((2, 4), forwards):
        assert m.startswith(f"resnet20: forward #{calls} ({calls} samples so far); ops: bn_act 19, conv 19, "), m


def test_example_refuses_unknown_options(on_sys_path: Path) -> None:
    from archc_example_backend import ExampleBackend

    graph = archc.build(SPEC, lower=False).graph
    with pytest.raises(BackendError, match="no option"):
        ExampleBackend().lower(graph, fast=True)
    with pytest.raises(BackendError, match="log_every"):
        ExampleBackend().lower(graph, log_every=-1)


def test_example_version_matches_its_pyproject(on_sys_path: Path) -> None:
    import archc_example_backend

    assert archc_example_backend.__version__ == VERSION
    assert PROJECT["entry-points"]["archc.backends"] == {"example": "archc_example_backend:ExampleBackend"}


# --- `archc backends` ------------------------------------------------------------------------------


def test_backends_json_in_process(on_sys_path: Path) -> None:
    r = CliRunner().invoke(main, ["backends", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["group"] == "archc.backends"
    rows = {row["name"]: row for row in data["backends"]}
    assert {"torch", "triton", "example"} <= set(rows)
    assert rows["example"]["distribution"] == "archc-backend-example" and rows["example"]["version"] == VERSION
    assert rows["torch"]["available"] and rows["torch"]["distribution"] == "archc"
    triton = rows["triton"]
    assert triton["loads"]
    if not torch.cuda.is_available():
        try:
            import triton as _  # noqa: F401

            assert triton["status"] == GPU_NOTE
        except ImportError:
            assert triton["status"] == "needs the triton package (pip install triton)"
        assert not triton["available"]


def test_backends_shows_a_plugin_that_fails_to_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "broken-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[archc.backends]\nbroken = no_such_module:Backend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = CliRunner().invoke(main, ["backends", "--json"])
    assert r.exit_code == 0
    row = next(b for b in json.loads(r.stdout)["backends"] if b["name"] == "broken")
    assert row["version"] == "0.3" and not row["loads"] and not row["available"]
    assert "failed to load" in row["status"] and "no_such_module" in row["status"]

    table = CliRunner().invoke(main, ["backends"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    row = r"^ *broken +broken 0\.3 +backend 'broken' \(no_such_module:Backend\) failed to load"
    assert re.search(row, table.stdout, re.M), table.stdout
