"""A run's training state read back from its checkpoint, checked: weights, optimizer, schedule, RNG, counters."""

from __future__ import annotations

import math
from typing import Any

import torch

from archc.errors import CheckpointError
from archc.train.schedule import Schedule


def restore_state(
    state: Any, model: Any, optimizer: torch.optim.Optimizer, schedule: Schedule, iters: int, select: str
) -> tuple[int, dict[str, float] | None, float]:
    """Load a checkpoint's training state into a run, after checking that it fits and is well formed.

    Args:
        state: the checkpoint (archc.train.checkpoint.TrainState).
        model: the run's model (not wrapped for DDP).
        optimizer: the run's optimizer.
        schedule: the run's learning-rate schedule.
        iters: the recipe's iterations (the checkpoint's iteration must lie in 0..iters).
        select: the task's metric for `best`.

    Returns:
        The iteration to continue at, the best evaluation so far (or None) and the seconds trained.

    Raises:
        CheckpointError: the weights do not fit the net, or a counter, the optimizer or schedule state is malformed.
    """
    from archc.train.checkpoint import restore_rng
    from archc.weights import checkpoint_slots, weight_problems

    problems = weight_problems(state.model, checkpoint_slots(model.state_dict()))
    if problems:
        raise CheckpointError(
            "the checkpoint does not fit the net: " + "; ".join(problems),
            hint="resume with the spec and --set values the run started with",
        )
    meta = state.meta
    iteration, elapsed, best = meta.get("iteration"), meta.get("elapsed", 0.0), meta.get("best")
    if not _is_number(iteration, int) or not 0 <= iteration <= iters:
        raise CheckpointError(
            f"the checkpoint's iteration {iteration!r} is not a count in 0..{iters}",
            hint="the header was edited or is not archc train's: use the run's other checkpoint",
        )
    # a diverged test loss may be inf or NaN in a real run: only the type is checked
    best_ok = best is None or (
        isinstance(best, dict)
        and select in best
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in best.values())
    )
    if not _is_number(elapsed, float) or not best_ok:
        raise CheckpointError(
            "the checkpoint's elapsed time or best result is malformed",
            hint="the header was edited or is not archc train's: use the run's other checkpoint",
        )
    model.load_state_dict(state.model, strict=True)
    _load_optimizer(optimizer, state.optimizer)
    try:
        schedule.load_state_dict(state.scheduler)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the checkpoint's schedule state is malformed ({exc!r})") from None
    restore_rng(state.rng)
    return iteration, best, float(elapsed)


def _is_number(value: Any, kind: type) -> bool:
    """A finite JSON number (an int where `kind` is int); never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return False
    return math.isfinite(value)


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, checking what torch does not: numbers and buffer shapes.

    Raises:
        CheckpointError: a hyperparameter is not a finite number >= 0, the groups or a buffer do not fit.
    """
    bad = CheckpointError
    hint = "the header was edited or is not archc train's: use the run's other checkpoint"
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise bad("the checkpoint's optimizer param_groups are malformed", hint=hint)
    for g in groups:
        for key in ("lr", "momentum", "weight_decay", "dampening"):
            if key in g and not (_is_number(g[key], float) and g[key] >= 0):
                raise bad(f"the checkpoint's optimizer {key} {g[key]!r} is not a finite number >= 0", hint=hint)
    try:
        optimizer.load_state_dict(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise bad(f"the checkpoint's optimizer state does not fit the net ({exc})", hint=hint) from None
    for p, entries in optimizer.state.items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != p.shape:
                raise bad(
                    f"the checkpoint's optimizer {name} has shape {tuple(value.shape)} for a parameter of "
                    f"shape {tuple(p.shape)}",
                    hint=hint,
                )
