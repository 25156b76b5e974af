"""Cheap, offline venvs for the install tests: this interpreter's packages, seen through a `.pth` file."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path


def make_venv(env_dir: Path, *, run_pth_files: bool) -> Path:
    """Create a venv that sees this interpreter's packages (torch, lark, pip, setuptools); return its python.

    A venv made with --system-site-packages from inside a venv sees the base interpreter's packages, not
    the outer venv's, hence the `.pth`. With `run_pth_files` the outer site directories are added with
    site.addsitedir, which also runs their `.pth` files (an editable archc comes along); without, they are
    plain path lines, so the editable finder stays out and a wheel installed into the venv is what imports.
    """
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)],
        check=True,
        timeout=120,
    )
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parents = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if os.path.isdir(p)]
    line = "import site; site.addsitedir({!r})\n" if run_pth_files else "{}\n"
    Path(purelib, "_archc_parent_site.pth").write_text("".join(line.format(p) for p in parents))
    return python


def pip_install(python: Path, src: Path, env: dict[str, str]) -> None:
    """`pip install --no-deps --no-build-isolation --no-index SRC` into the venv of `python` (offline).

    Raises:
        AssertionError: pip failed; the message holds its output.
    """
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--disable-pip-version-check", "--quiet", str(src)],
        capture_output=True,
        text=True,
        env=dict(env, PIP_NO_INPUT="1"),
        timeout=600,
    )
    assert proc.returncode == 0, f"pip install of {src} failed:\n{proc.stdout}\n{proc.stderr}"
