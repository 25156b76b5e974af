"""Test-session set-up shared by every test module: the Triton interpreter, and how the suite runs in parallel.

The suite runs on pytest-xdist workers (pyproject's addopts: `-n auto --dist load --maxschedchunk 1`), one
per CPU archc would use (affinity and cgroup quota, `archc.threads.available_cpus`), each with an equal
share of the CPUs for torch. Most tests are single-threaded Python (elaboration, code generation, the
Triton interpreter, ONNX export), so two workers on two cores do about twice the work of one process.
`-n 0` runs everything in this process, as before.
"""

import os

import pytest

# Triton decides at import time whether its library functions run in the CPU
# interpreter, so this must happen before any test imports triton. CI has no GPU;
# the triton backend's kernels are checked in the interpreter on small shapes.
os.environ.setdefault("TRITON_INTERPRET", "1")


def _cpus() -> int:
    from archc.threads import available_cpus

    return available_cpus()


# A worker's share of the CPUs, set before torch is imported (torch reads OMP_NUM_THREADS once, and
# subprocesses the tests start inherit it): workers that each spin two OpenMP threads on two cores
# wait for each other (archc.threads.default_threads caps at torch's count, so `archc train` in a test
# follows it too).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cpus() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: the CPUs this process may use (os.cpu_count() ignores affinity and a container's quota)."""
    return _cpus()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the long tests first, each followed by a short one, so that no two of them queue on one worker.

    With `--dist load --maxschedchunk 1` a worker holds the test it runs and at most one more, and takes
    the next test in this order when it is free: the long ones spread over the workers, and the short
    ones fill the gaps to the end.
    """
    slow = [item for item in items if item.get_closest_marker("slow")]
    if not slow or len(slow) == len(items):
        return
    quick = [item for item in items if not item.get_closest_marker("slow")]
    order = []
    for i, item in enumerate(slow):
        order.append(item)
        if i < len(quick):
            order.append(quick[i])
    order.extend(quick[len(slow) :])
    items[:] = order
