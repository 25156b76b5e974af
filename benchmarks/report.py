"""What every benchmark script reports with its numbers: the machine, and its section of BENCHMARKS.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Any

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def machine_info() -> dict[str, Any]:
    """Platform, CPU model and count, Python and torch versions, UTC date, load average."""
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        torch_version = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch_version,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": load_average(),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for judging how noisy a timing is."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def replace_section(begin: str, end: str, text: str, heading: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace what stands between `begin` and `end` in BENCHMARKS.md; append heading and markers if absent."""
    block = f"{begin}\n{text}{end}"
    doc = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        doc = head + block + tail
    else:
        doc = f"{doc.rstrip()}\n\n{heading}\n\n{block}\n"
    path.write_text(doc, encoding="utf-8")


def publish(text: str, write: bool, begin: str, end: str, heading: str) -> None:
    """Print a benchmark's section and, when `write`, put it between its markers in BENCHMARKS.md."""
    print(text)
    if write:
        replace_section(begin, end, text, heading)
