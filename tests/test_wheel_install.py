"""A plain (non-editable) `pip install .` ships the spec catalogue: names work outside the checkout.

The venv is made the cheap, offline way of tests/backends/test_example_plugin.py (tests/venvs.py), but
without running the outer `.pth` files: the editable install of archc (a finder that maps `archc` onto
this checkout) stays out, and the venv's own wheel-installed archc is the one imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from archc.frontend import catalog
from tests.venvs import make_venv, pip_install

ROOT = Path(__file__).resolve().parents[1]
# what the wheel is built from: the project's files, not the checkout's build outputs
SOURCES = ["pyproject.toml", "README.md", "archc", "backends", "specs"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.pyc")

pytestmark = pytest.mark.slow  # a wheel build and three fresh interpreters importing torch


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FORCE_COLOR") and not k.startswith("PIP_")}
    env.update(OMP_NUM_THREADS="1", NO_COLOR="1")
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv with archc pip-installed (non-editable) from a copy of the project."""
    base = tmp_path_factory.mktemp("wheel_venv")
    src = base / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=IGNORE)
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    python = make_venv(base / "venv", run_pth_files=False)
    pip_install(python, src, _env())
    purelib = next((base / "venv").glob("lib*/python*/site-packages"))
    assert not (purelib / "__editable__.archc-0.1.0.pth").exists()  # a real install, not an editable one
    return python.parent


def _run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd, env=_env())


def test_names_build_compile_and_list_outside_the_checkout(venv: Path, tmp_path: Path) -> None:
    installed = venv.parent / "lib"
    r = _run(venv, tmp_path, "archc", "build", "resnet50", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"] == 25_557_032 and out["name"] == "resnet50"
    assert Path(out["spec"]).is_relative_to(installed), out["spec"]  # the wheel's copy, not the checkout's

    script = (
        "import json, archc; m = archc.compile('resnet152'); "
        "print(json.dumps([archc.__file__, sum(p.numel() for p in m.parameters())]))"
    )
    r = _run(venv, tmp_path, "python", "-c", script)
    assert r.returncode == 0, r.stderr
    where, params = json.loads(r.stdout)
    assert Path(where).is_relative_to(installed) and params == 60_192_808

    r = _run(venv, tmp_path, "archc", "list", "--json")
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    assert Path(listing["catalogue"]).is_relative_to(installed)
    assert [m["name"] for m in listing["models"]] == list(catalog.entries())
    rows = {m["name"]: m for m in listing["models"]}
    assert rows["cifar/resnet1202"]["params"] == 19_421_274


def test_a_misspelled_name_and_a_use_of_the_catalogue_outside_the_checkout(venv: Path, tmp_path: Path) -> None:
    r = _run(venv, tmp_path, "archc", "build", "resnt50")
    assert r.returncode == 2 and "did you mean 'resnet50'?" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "mine.arch").write_text(
        'use "blocks/resnet.arch"\nnet mine {\n  input 3x32x32\n  layer1: basic(16, 1, B)\n}\n'
    )
    r = _run(venv, tmp_path, "archc", "build", "mine.arch", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] > 0
