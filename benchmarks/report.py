"""What every benchmark script reports with its numbers: the machine, and its section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

# the machine facts live in the package, where `archc bench` records them too
from archc.bench.machine import load_average, machine_info

__all__ = ["BENCHMARKS_MD", "load_average", "machine_info", "publish", "replace_section"]

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


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
