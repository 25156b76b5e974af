"""Run directories and their metrics log (runs/NAME-NNNN/metrics.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from archc.errors import CheckpointError


def new_run_dir(root: Path, name: str) -> Path:
    """Create root/NAME-0001 (or the first free number) and return it.

    mkdir without exist_ok claims a number atomically, so two runs started together get different ones.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [p.name[len(name) + 1 :] for p in root.glob(f"{name}-*")]
    n = max((int(t) for t in taken if t.isdigit()), default=0) + 1
    while True:
        path = root / f"{name}-{n:04d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


class MetricsLog:
    """Append-only JSON-lines log of training and test records.

    Each record is flushed as it is written (not fsynced: a lost tail after a power cut costs a few
    records, which the resumed run writes again; a torn last line is skipped by read_metrics).

    Args:
        path: the metrics.jsonl file.
        enabled: False on ranks other than 0, which write nothing.
    """

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()

    def truncate_after(self, iteration: int) -> None:
        """Drop records past `iteration` (a resumed run writes them again); rewritten atomically."""
        if not self.enabled or not self.path.is_file():
            return
        from archc.train.checkpoint import atomic_write

        kept = [r for r in read_metrics(self.path) if int(r.get("iter", 0)) <= iteration]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (a run killed mid-write) is ignored.

    Raises:
        CheckpointError: the file is missing, or a line other than the last is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no metrics log: {path}", hint="give a run directory written by archc train")
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            if i == len(lines) or (i == len(lines) - 1 and not lines[-1]):
                continue  # torn tail
            raise CheckpointError(
                f"{path}:{i}: not a metrics record", hint="the file was edited or corrupted"
            ) from None
        out.append(rec)
    return out


__all__ = ["MetricsLog", "new_run_dir", "read_metrics"]
