"""The training loop behind `archc train`: one process or many (torchrun), resumable bit for bit.

Every source of randomness is a function of (seed, iteration): the batch order and augmentation come from
the data layer's per-iteration generators, the model is initialised from the seed, and a checkpoint holds
the optimizer, schedule and RNG states. So a run killed at any point and resumed from its last checkpoint
ends with exactly the weights of an uninterrupted run (CPU, deterministic algorithms).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archc.errors import TrainError
from archc.ir import OPS, Graph
from archc.train.config import TrainConfig, config_from_meta
from archc.train.distributed import DistInfo, all_reduce_sum, barrier, convert_sync_bn, init_distributed
from archc.train.progress import Progress
from archc.train.recipes import Recipe
from archc.train.resume import restore_state
from archc.train.schedule import Schedule
from archc.train.stopping import StopSignals, TrainingStopped
from archc.train.tasks import task_class


def depth(graph: Graph) -> int:
    """Weighted layers (convs and fully-connected) on the longest path: the paper's depth (e.g. 6n+2)."""
    d: dict[str, int] = {}
    for n in graph.nodes():
        below = max((d[i] for i in n.inputs), default=0)
        d[n.name] = below + (1 if OPS[n.op].weighted else 0)
    return max(d.values(), default=0)


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path | None
    iterations: int
    final: dict[str, float]
    best: dict[str, float] | None
    seconds: float


def _autocast(amp: str | None, device: str) -> Callable[[], Any] | None:
    if amp is None:
        return None
    if amp not in ("bf16", "fp16"):
        raise TrainError(f"--amp must be bf16 or fp16, not {amp!r}")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if amp == "fp16" and kind == "cpu":
        raise TrainError("--amp fp16 needs a GPU", hint="use --amp bf16 on the CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=kind, dtype=dtype)


def make_task(cfg: TrainConfig, graph: Graph, recipe: Recipe, info: DistInfo) -> Any:
    """The task object that supplies batches, the loss and evaluation (`select`: the metric for `best`)."""
    return task_class(cfg.task).from_config(cfg, graph, recipe, info)


class Trainer:
    """Owns the model, optimizer, schedule, task and run directory of one training run.

    Args:
        cfg: the settings.
        resume: a run directory (or a checkpoint file) to continue.
        log: where human-readable lines go (rank 0 only).
    """

    def __init__(self, cfg: TrainConfig, resume: Path | None = None, log: Callable[[str], None] = print) -> None:
        from archc.train.checkpoint import load_checkpoint
        from archc.train.runs import resume_checkpoint

        self.state = None
        self._lock: Any = None
        note = None
        if resume is not None:
            path = resume_checkpoint(resume)
            self.state = load_checkpoint(path)
            cfg = config_from_meta(self.state.meta, cfg)
            if path.name == "best.safetensors" and resume.is_dir():
                note = f"{resume} has no last.safetensors (the run was stopped while writing it): resuming from {path}"
        self.cfg = cfg
        self.info = init_distributed(cfg.device)
        self.log = log if self.info.main else (lambda _msg: None)
        if note:
            self.log(note)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)
        self.graph, self.module = self._build()
        self.recipe = cfg.recipe
        self.depth = depth(self.graph)
        self.schedule = Schedule(self.recipe, self.depth)
        self.task = make_task(cfg, self.graph, self.recipe, self.info)
        self.model = self.module
        if self.info.device != "cpu":
            self.model = self.model.to(self.info.device)
        if cfg.sync_bn and self.info.world > 1:
            convert_sync_bn(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params,
            lr=self.recipe.lr,
            momentum=self.recipe.momentum,
            weight_decay=self.recipe.weight_decay,
            nesterov=self.recipe.nesterov,
        )
        self.start = 0
        self.best: dict[str, float] | None = None
        self.elapsed = 0.0
        if self.state is not None:
            self.start, self.best, self.elapsed = restore_state(
                self.state, self.model, self.optimizer, self.schedule, self.recipe.iters, self.task.select
            )
            self.run_dir: Path | None = (resume if resume.is_dir() else resume.parent) if resume else None
        else:
            self.run_dir = self._new_run_dir() if self.info.main else None
        self.wrapped = self.model
        if self.info.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.info.local_rank] if self.info.device.startswith("cuda") else None
            self.wrapped = DDP(self.model, device_ids=ids)
        self.autocast = _autocast(cfg.amp, self.info.device)
        from archc.train.runs import MetricsLog

        path = (self.run_dir or Path(os.devnull)) / "metrics.jsonl"
        self.metrics = MetricsLog(path, enabled=self.info.main and self.run_dir is not None)
        if self.info.main and self.run_dir is not None:
            self._claim_run_dir()

    def _claim_run_dir(self) -> None:
        """Lock the run directory for this process; on resume, clear a killed run's temp files and records."""
        from archc.files import remove_temps
        from archc.train.runs import RunLock

        self._lock = RunLock(self.run_dir)
        if self.state is None:
            return
        try:
            remove_temps(self.run_dir)
            self.metrics.truncate_after(self.start)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run directory (another `archc train --resume` may use it from now on)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _build(self) -> tuple[Graph, Any]:
        return task_class(self.cfg.task).build_model(self.cfg, fresh=self.state is None)

    def _new_run_dir(self) -> Path:
        from archc.train.runs import new_run_dir

        return new_run_dir(Path(self.cfg.runs), self.cfg.name or self.graph.name)

    def _save(self, tag: str, iteration: int, final: dict[str, float] | None) -> None:
        from archc.train.checkpoint import TrainState, capture_rng, save_checkpoint

        if not self.info.main or self.run_dir is None:
            return
        meta = {
            "iteration": iteration,
            "best": self.best,
            "last_eval": final,
            "elapsed": self.elapsed,
            "config": self.cfg.to_meta(),
            "net": self.graph.name,
            "depth": self.depth,
            "world": self.info.world,
            "torch": torch.__version__,
            # what inference needs besides the weights (e.g. a detector's input mean and class names)
            **getattr(self.task, "checkpoint_meta", dict)(),
        }
        state = TrainState(
            model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.schedule.state_dict(),
            rng=capture_rng(),
            meta=meta,
        )
        save_checkpoint(self.run_dir / f"{tag}.safetensors", state)

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train from the current iteration to the recipe's end (or `stop_after` iterations this call)."""
        r = self.recipe
        end = r.iters if stop_after is None else min(r.iters, self.start + stop_after)
        ckpt_every = self.cfg.checkpoint_every or r.eval_every
        device = self.info.device
        if self.info.main:
            where = f" -> {self.run_dir}" if self.run_dir else ""
            self.log(
                f"training {self.graph.name} ({self.depth} layers) on {self.task.data.name}: {r.iters} iterations "
                f"of {r.batch_size} ({r.name} recipe), {self.info.world} process(es) on {device}{where}"
                + (f", resuming at {self.start}" if self.start else "")
            )
        window = torch.zeros(3, dtype=torch.float64)
        t_window = time.perf_counter()
        t_start = time.perf_counter() - self.elapsed
        it_window = 0
        last_eval: dict[str, float] = {}
        progress = Progress(self.cfg.progress and self.info.main, end, self.start, device)
        model = self.wrapped
        model.train()
        batches = self.task.batches(self.start)
        with progress, StopSignals() as stop:
            for it in range(self.start, end):
                lr = self.schedule.lr(it)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                x, y = next(batches)
                x = _to(x, device)
                y = _to(y, device)
                ctx = self.autocast() if self.autocast else contextlib.nullcontext()
                with ctx:
                    loss, stats = self.task.step(model, x, y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                stats = stats.detach().double().cpu()
                if self.schedule.warming:
                    all_reduce_sum(stats, self.info)
                    self.schedule.observe_train_error(it, float(stats[1] / stats[2]))
                    stats /= self.info.world  # summed again with the window below
                window += stats
                it_window += 1
                done = it + 1
                if done % r.log_every == 0 or done == end:
                    all_reduce_sum(window, self.info)
                    now = time.perf_counter()
                    n = max(window[2].item(), 1.0)
                    rec = {
                        "iter": done,
                        "split": "train",
                        "loss": window[0].item() / n,
                        **({"error": window[1].item() / n} if self.task.select == "error" else {}),
                        "lr": lr,
                        "img_s": it_window * r.batch_size / max(now - t_window, 1e-9),
                        "time": now - t_start,
                        "epoch": done / max(self.task.epoch_iters, 1),
                    }
                    self.metrics.write(rec)
                    progress.update(done, rec)
                    window.zero_()
                    it_window = 0
                    t_window = time.perf_counter()
                else:
                    progress.tick(done, r.batch_size)  # a heartbeat between records
                if done % r.eval_every == 0 or done == end:
                    last_eval = self.task.evaluate(self.wrapped, device, self.autocast)
                    model.train()
                    key = self.task.select
                    higher = getattr(self.task, "higher_is_better", False)
                    # the plateau schedule watches an error: a score that should rise is negated
                    self.schedule.observe_test_error(done, -last_eval[key] if higher else last_eval[key])
                    now = time.perf_counter()
                    self.metrics.write({"iter": done, "split": "test", **last_eval, "time": now - t_start})
                    progress.test(done, last_eval)
                    if self.best is None or (
                        last_eval[key] > self.best[key] if higher else last_eval[key] < self.best[key]
                    ):
                        self.best = {**last_eval, "iter": done}
                        self.elapsed = now - t_start
                        self._save("best", done, last_eval)
                    t_window += time.perf_counter() - now
                saved = done % ckpt_every == 0 or done == end
                if saved:
                    self.elapsed = time.perf_counter() - t_start
                    self._save("last", done, last_eval or None)
                    barrier(self.info)
                if done < end and stop.agreed(self.info):
                    self._stop(stop.signum, done, saved, t_start, last_eval)
        self.start = end
        self.elapsed = time.perf_counter() - t_start
        return TrainResult(self.run_dir, end, last_eval, self.best, self.elapsed)

    def _stop(self, signum: int, done: int, saved: bool, t_start: float, last_eval: dict[str, float]) -> None:
        """Checkpoint iteration `done` (unless just done), say so, and raise TrainingStopped."""
        if not saved:
            self.elapsed = time.perf_counter() - t_start
            self._save("last", done, last_eval or None)
            barrier(self.info)
        where = f"; continue with: archc train {self.cfg.spec} --resume {self.run_dir}" if self.run_dir else ""
        self.log(f"stopped by {signal.Signals(signum).name} at iteration {done}: checkpoint written{where}")
        raise TrainingStopped(signum, done)


def _to(x: Any, device: str) -> Any:
    if device == "cpu":
        return x
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x
