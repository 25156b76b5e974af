"""The machine and software a benchmark ran on: CPU model, device, load and package versions.

`archc bench` records them in its result; the scripts in benchmarks/ print `machine_info()`
with their tables. Nothing here imports torch: callers that have it pass it in.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _pkg_version
from pathlib import Path
from typing import Any


def package_version(dist: str) -> str | None:
    """The installed version of distribution `dist`, or None when it is not installed."""
    try:
        return _pkg_version(dist)
    except PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux); elsewhere what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for judging how noisy a timing is."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine_info() -> dict[str, Any]:
    """Platform, CPU model and count, Python and torch versions, UTC date, load average."""
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        torch_version = "not installed"
    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch_version,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": load_average(),
    }


def device_info(torch: Any, device: Any) -> dict[str, Any]:
    """The device a benchmark ran on: a GPU's name, or the CPU's model and torch's intra-op threads.

    Args:
        torch: the torch module.
        device: a torch.device.
    """
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device)}
    return {"type": "cpu", "name": cpu_name(), "threads": torch.get_num_threads()}


def versions(torch: Any, cuda: bool) -> dict[str, Any]:
    """Python, torch, triton, archc, CUDA and cuDNN versions, and whether Triton ran in its interpreter.

    Args:
        torch: the torch module.
        cuda: whether the benchmark ran on a GPU (cuDNN's version is only asked for then).
    """
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "archc": package_version("archc"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
    }
