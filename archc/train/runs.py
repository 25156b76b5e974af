"""Run directories and their metrics log (runs/NAME-NNNN/metrics.jsonl)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from archc.errors import CheckpointError
from archc.files import make_dir, writing

_BAD_NAME = re.compile(r"^$|^\.|[/\\\x00]")


def new_run_dir(root: Path, name: str) -> Path:
    """Create root/NAME-0001 (or the first number after the highest taken) and return it.

    mkdir without exist_ok claims a number atomically, so two runs started at the same moment get
    different directories; the loser of a race moves on to the next number.

    Args:
        root: the runs directory (created if needed).
        name: the run's name, e.g. the net's: one directory name, not starting with a dot.

    Returns:
        The new, empty directory.

    Raises:
        CheckpointError: the name is not usable as a directory name.
        OutputError: the directory cannot be created (no permission, a file in the way, disk full).
    """
    if _BAD_NAME.search(name):
        raise CheckpointError(
            f"run name {name!r} is not a plain directory name", hint="give a name without '/', '\\' or a leading '.'"
        )
    root = make_dir(root, "runs directory")
    prefix = f"{name}-"
    with writing(root, "runs directory"):
        taken = [p.name[len(prefix) :] for p in root.iterdir() if p.name.startswith(prefix)]
    n = max((int(t) for t in taken if t.isdigit()), default=0) + 1
    with writing(root / f"{prefix}{n:04d}", "run directory"):
        while True:
            path = root / f"{prefix}{n:04d}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                n += 1


def resume_checkpoint(run: Path) -> Path:
    """The checkpoint `--resume RUN` continues from: RUN/last.safetensors, else RUN/best.safetensors.

    `best` is written before `last` at an evaluation, so a run killed during its first `last` write has
    only `best`, which holds the whole training state of its iteration; a file path is taken as given.

    Raises:
        CheckpointError: a directory with neither checkpoint.
    """
    run = Path(run)
    if not run.is_dir():
        return run
    for name in ("last.safetensors", "best.safetensors"):
        if (run / name).is_file():
            return run / name
    raise CheckpointError(
        f"nothing to resume in {run}: no last.safetensors (nor best.safetensors)",
        hint="give a run directory written by archc train",
    )


class RunLock:
    """An exclusive lock on a run directory (RUN/.lock), held while one process trains into it.

    A second `archc train --resume` of the same directory (or a resume of a run still training) would
    interleave checkpoints and metrics lines; it fails at once instead. The lock is flock(2) on an open
    file, so the kernel drops it when the process dies, even by SIGKILL: no stale lock is ever left.
    Where fcntl does not exist (Windows) no lock is taken.

    Args:
        run_dir: the run directory.

    Raises:
        CheckpointError: another process holds the lock.
        OutputError: the lock file cannot be created.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:
            return
        with writing(self.path, "run lock"):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise CheckpointError(
                f"run directory {run_dir} is in use by another archc train"
                + (f" (process {holder})" if holder.isdigit() else ""),
                hint="wait for that run to end (or stop it), then --resume again",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let other processes use the directory (also done by the kernel when this process ends)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class MetricsLog:
    """Append-only JSON-lines log of training and test records.

    Each record is one `write` of one line, flushed at once so that `archc plot` sees a live run; it is
    not fsynced: a power cut loses at most the last few records, which a resumed run writes again (it
    truncates the log to its checkpoint's iteration), and an fsync per record would cost more than the
    record is worth. A torn last line left by a killed run is dropped before the first new record, so
    new records never glue onto it.

    Args:
        path: the metrics.jsonl file (created on the first record).
        enabled: False on ranks other than 0, which write nothing.
    """

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._checked_tail = False

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one JSON line.

        Args:
            record: a JSON-able dict, by convention with "iter" and "split" (see docs/training.md).
        """
        if not self.enabled:
            return
        line = json.dumps(record, sort_keys=True) + "\n"
        with writing(self.path, "metrics log"):
            if not self._checked_tail:
                _drop_torn_tail(self.path)
                self._checked_tail = True
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()

    def truncate_after(self, iteration: int) -> None:
        """Drop the records past `iteration` (a resumed run writes them again); rewritten atomically.

        Args:
            iteration: the last iteration to keep, e.g. the resumed checkpoint's.

        Raises:
            CheckpointError: the log is malformed before its last line.
        """
        if not self.enabled or not self.path.is_file():
            return
        from archc.files import atomic_write

        kept = [r for r in read_metrics(self.path) if _iteration(r) <= iteration]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        with writing(self.path, "metrics log"):
            atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        self._checked_tail = True


def _iteration(record: dict[str, Any]) -> float:
    """A record's iteration; records without one are kept (they belong to no iteration)."""
    value = record.get("iter", 0)
    return value if isinstance(value, (int, float)) else 0


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline (a write interrupted by a kill) off the end of `path`."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # only the tail is read: the log of a long run can be large
        pos = size
        while pos > 0:
            step = min(pos, 1 << 16)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(pos + cut + 1)
                return
        f.truncate(0)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in file order.

    A last line without its newline is a write cut short by a kill and is ignored, whatever it holds;
    every complete line must be a JSON object.

    Args:
        path: the metrics.jsonl file.

    Returns:
        The records as dicts.

    Raises:
        CheckpointError: the file is missing or unreadable, or a complete line is not a JSON object
            (named as FILE:LINE).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no metrics log: {path}", hint="give a run directory written by archc train")
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}", hint="check the file's permissions") from None
    lines = text.split("\n")
    # text.split leaves "" after a final newline; anything else there is a torn line
    complete, _torn = lines[:-1], lines[-1]
    out = []
    for i, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            raise CheckpointError(
                f"{path}:{i}: not a metrics record: {line[:60]!r}",
                hint="the file was edited or corrupted; fix or delete that line",
            )
        out.append(rec)
    return out


__all__ = ["MetricsLog", "RunLock", "new_run_dir", "read_metrics", "resume_checkpoint"]
