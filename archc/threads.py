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
    cpus = _affinity()
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def idle_cpus() -> float | None:
    """The machine's CPUs minus its 1-minute load average, when this process may use them all; else None.

    The load average counts the whole machine, so it says nothing about a process pinned to some CPUs or
    held to a cgroup quota (a container sees its host's load): None then, and where it cannot be read.
    """
    total = os.cpu_count()
    if not total or _affinity() < total or cgroup_cpu_limit() is not None:
        return None
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return total - load


def default_threads(load_aware: bool = True) -> int:
    """torch's intra-op threads for this process: its share of the CPUs it may use that are not busy.

    The available CPUs (affinity, cgroup quota) are split over the processes torchrun started on this
    machine (LOCAL_WORLD_SIZE); on a machine whose load average is above its CPU count, only our fair
    share counts (threads that wait for a busy core make a step many times slower: measured 6 img/s with two
    threads against 44 with one on a 2-core machine at load 11). Never above torch's own default (its
    count of physical cores, or OMP_NUM_THREADS), never below 1.

    Args:
        load_aware: leave out the CPUs the load average shows busy. Off where a run must be reproducible
            (`--deterministic`, benchmarks): float sums depend on the thread count, and the load does not
            repeat.
    """
    import torch

    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    n = available_cpus() // local
    idle = idle_cpus() if load_aware else None
    if idle is not None and idle < 0:
        # Only an oversubscribed machine (load above its CPUs) counts: a lower load may be this user's own
        # previous run, which must not halve the next one. Our fair share is CPUs x CPUs / load.
        cpus = available_cpus()
        n = min(n, math.floor(cpus * cpus / (cpus - idle) / local))
    return max(1, min(n, torch.get_num_threads()))


def describe(threads: int) -> str:
    """One line on the threads in use for a log: "1 CPU thread (2 CPUs available, load average 11.7)"."""
    cpus = available_cpus()
    where = f"{cpus} CPU{'' if cpus == 1 else 's'} available"
    if idle_cpus() is not None:
        where += f", load average {os.getloadavg()[0]:.1f}"
    return f"{threads} CPU thread{'' if threads == 1 else 's'} ({where}; --threads to choose)"


@contextlib.contextmanager
def torch_threads(threads: int | None, load_aware: bool = True) -> Iterator[int]:
    """Run the block with torch's intra-op pool at `threads` (None: default_threads(load_aware)); restored after.

    Yields:
        The number of threads in use.
    """
    import torch

    before = torch.get_num_threads()
    n = default_threads(load_aware) if threads is None else threads
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
