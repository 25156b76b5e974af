"""How many CPU threads torch should use: the CPUs this process may actually run on, not the machine's.

torch sizes its intra-op pool from the machine's cores. A process pinned to fewer CPUs (taskset, a cpuset),
limited by a cgroup CPU quota (docker --cpus, Kubernetes limits) or sharing the cores with the other
processes torchrun starts oversubscribes them, and then its threads mostly wait on each other: on a busy
2-core machine `archc train` of ResNet-20 fell from 33-40 img/s with one thread to 7-11 with two.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path


def cgroup_cpu_limit(root: Path = Path("/")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None without one.

    Reads cgroup v2's `cpu.max` or v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us`, at the process's own
    cgroup path and, where that is not mounted (inside a container), at the hierarchy's root.

    Args:
        root: the file system root to read /proc and /sys under (a test's fake tree).

    Returns:
        quota / period, or None when there is no limit or nothing can be read.
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        rel = path.strip().lstrip("/")
        if controllers == "":  # v2: "0::/path"
            base = root / "sys/fs/cgroup"
            for d in (base / rel, base):
                text = _read(d / "cpu.max")
                if text is not None:
                    quota, _, period = text.partition(" ")
                    return _ratio(quota, period)
        elif "cpu" in controllers.split(","):
            base = root / "sys/fs/cgroup" / controllers
            if not base.is_dir():
                base = root / "sys/fs/cgroup/cpu"
            for d in (base / rel, base):
                quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                if quota is not None and period is not None:
                    return _ratio(quota, period)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = float(quota), float(period)
    except ValueError:
        return None  # "max": no quota
    return q / p if q > 0 and p > 0 else None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup's quota (rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def default_threads() -> int:
    """torch's intra-op threads for this process: its share of the available CPUs.

    The CPUs are split over the processes torchrun started on this machine (LOCAL_WORLD_SIZE), and the
    result is never above torch's own default (its count of physical cores, or OMP_NUM_THREADS).
    """
    import torch

    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, min(available_cpus() // local, torch.get_num_threads()))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with torch's intra-op pool at `threads` (None: default_threads()); restored after.

    Yields:
        The number of threads in use.
    """
    import torch

    before = torch.get_num_threads()
    n = default_threads() if threads is None else threads
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
