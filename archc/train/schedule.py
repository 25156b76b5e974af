"""The learning-rate schedule in iterations: step or plateau, with the paper's warm-up for very deep nets."""

from __future__ import annotations

from typing import Any

from archc.train.recipes import Recipe


class Schedule:
    """Learning rate as a function of the iteration and of what training has observed so far.

    The state (warm-up finished?, plateau drops) is saved in checkpoints, so a resumed run follows the same
    learning rates as an uninterrupted one.

    Args:
        recipe: the (scaled) recipe.
        depth: the net's depth in weighted layers; warm-up applies from `recipe.warmup_depth` layers.
    """

    def __init__(self, recipe: Recipe, depth: int) -> None:
        self.recipe = recipe
        self.warming = recipe.warmup_lr is not None and depth >= recipe.warmup_depth
        self.warmup_ended_at: int | None = None
        self.drops = 0
        self.drop_iters: list[int] = []
        self.best: float | None = None
        self.bad_evals = 0

    def lr(self, iteration: int) -> float:
        """The learning rate for (0-based) iteration `iteration`."""
        r = self.recipe
        if self.warming:
            return float(r.warmup_lr)  # type: ignore[arg-type]
        if r.schedule == "step":
            drops = sum(1 for m in r.milestones if iteration >= m)
        else:
            drops = self.drops
        return r.lr * r.gamma**drops

    def observe_train_error(self, iteration: int, error: float) -> None:
        """Warm-up: switch to the base rate once the training error is below `warmup_error` (Sec 4.2)."""
        if self.warming and error < self.recipe.warmup_error:
            self.warming = False
            self.warmup_ended_at = iteration

    def observe_test_error(self, iteration: int, error: float) -> bool:
        """Plateau schedule: count evaluations without improvement; returns True when the rate drops."""
        r = self.recipe
        if r.schedule != "plateau":
            return False
        if self.best is None or error < self.best - r.plateau_threshold:
            self.best = error
            self.bad_evals = 0
            return False
        self.bad_evals += 1
        if self.bad_evals >= r.plateau_patience and self.drops < r.max_drops:
            self.drops += 1
            self.drop_iters.append(iteration)
            self.bad_evals = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for checkpoints."""
        return {
            "warming": self.warming,
            "warmup_ended_at": self.warmup_ended_at,
            "drops": self.drops,
            "drop_iters": list(self.drop_iters),
            "best": self.best,
            "bad_evals": self.bad_evals,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.warming = bool(state["warming"])
        self.warmup_ended_at = state["warmup_ended_at"]
        self.drops = int(state["drops"])
        self.drop_iters = list(state["drop_iters"])
        self.best = state["best"]
        self.bad_evals = int(state["bad_evals"])
