"""Fill `.whl/` with the pure-Python wheels gpu_check.py needs on a device machine without network.

The device machine's Python (3.12, with torch and triton) lacks archc's pure-Python
dependencies lark and networkx (issue 12; everything else gpu_check imports is there).
This downloads their wheels, at the versions installed here, for CPython 3.12 into the
git-ignored folder `.whl/`, and refuses any wheel that is not pure Python (`*-none-any`),
since a compiled one built for this machine might not load there. The device command
then installs them with `pip install --no-index --no-deps --target` and runs archc from
the source tree on PYTHONPATH (docs/gpu-check.md has the exact command).

Usage:
    python benchmarks/carry_wheels.py [--dest .whl]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lark", "networkx")
PYTHON = "3.12"


def pins() -> list[str]:
    """name==version for each package, at the version installed in this environment."""
    return [f"{name}=={version(name)}" for name in PACKAGES]


def download(dest: Path) -> list[Path]:
    """Download the wheels into dest (kept from earlier runs, one version each); the wheel paths.

    Raises:
        SystemExit: pip failed, or a wheel is not pure Python.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        if not any(old.name.startswith(f"{p.replace('==', '-')}-") for p in pins()):
            old.unlink()  # another version: two versions of one package stop the install there
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", PYTHON, "--implementation", "cp",
        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
        "-d", str(dest), *pins(),
    ]  # fmt: skip
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit("carry_wheels: pip download failed")
    wheels = sorted(dest.glob("*.whl"))
    compiled = [w.name for w in wheels if not w.name.endswith("-none-any.whl")]
    if compiled:
        raise SystemExit(f"carry_wheels: not pure Python, would not travel safely: {', '.join(compiled)}")
    return wheels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", default=str(ROOT / ".whl"))
    args = p.parse_args(argv)
    wheels = download(Path(args.dest))
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.name}  {w.stat().st_size / 2**20:.2f} MiB")
    print(f"{len(wheels)} wheels, {total / 2**20:.2f} MiB in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
