"""One candidate's timed step: the first run alone, warm-up, then the timed steps and their peak memory.

The step is a train step (forward, cross-entropy, backward, SGD with the paper's settings) or
an eval forward under torch.inference_mode; dtype "bf16" runs the forward (and loss) under
torch.autocast(bfloat16). Each step is followed by a device synchronisation.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from archc.bench.memory import PeakMemory
from archc.bench.workload import Workload

SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}


def _autocast(work: Workload) -> Any:
    if work.dtype == "bf16":
        return work.torch.autocast(device_type=work.device.type, dtype=work.torch.bfloat16)
    return contextlib.nullcontext()


def _sync(work: Workload) -> None:
    if work.cuda:
        work.torch.cuda.synchronize()


def make_step(work: Workload, model: Any, params: Any) -> Callable[[], None]:
    """One step of `model` on the workload's batch: a train step with SGD over `params`, or an eval forward."""
    torch = work.torch
    x, y = work.x, work.y
    if work.cfg.mode == "train":
        opt = torch.optim.SGD(params, **SGD)

        def train_step() -> None:
            with _autocast(work):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return train_step

    def eval_step() -> None:
        with torch.inference_mode(), _autocast(work):
            model(x)

    return eval_step


def time_steps(
    work: Workload, memory: PeakMemory, step: Callable[[], None], row: dict[str, Any], base: int | None
) -> None:
    """First step (timed alone), warm-up, timed steps; fills the row's times, img/s and peak memory above `base`."""
    t = time.perf_counter()
    step()
    _sync(work)
    row["first_run_s"] = time.perf_counter() - t
    for _ in range(work.cfg.warmup):
        step()
    _sync(work)
    memory.reset()
    times = []
    for _ in range(work.cfg.iters):
        t = time.perf_counter()
        step()
        _sync(work)
        times.append(time.perf_counter() - t)
    row["peak_mem_mib"] = memory.peak(base)
    median = statistics.median(times)
    row["step_ms"] = {"median": median * 1e3, "min": min(times) * 1e3, "max": max(times) * 1e3}
    row["img_per_s"] = work.cfg.batch / median
    row["status"] = "ok"


def prime(work: Workload, memory: PeakMemory) -> None:
    """One untimed step of the eager baseline, so that no candidate pays the process's one-time
    costs (library initialisation, thread pools, workspaces) in its time or memory."""
    model = work.eager_model().train(work.cfg.mode == "train")
    make_step(work, model, model.parameters())()
    _sync(work)
    del model
    memory.free()
