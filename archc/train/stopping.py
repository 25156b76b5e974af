"""Stopping a run on SIGTERM or SIGINT: after the current iteration, checkpointed, every process at once."""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch

from archc.train.distributed import DistInfo, all_reduce_sum


class TrainingStopped(Exception):  # noqa: N818 - a stop the user asked for, not an error
    """A run ended early by SIGTERM or SIGINT, after writing its `last` checkpoint.

    Attributes:
        signum: the signal.
        iteration: the iterations done (the checkpoint's).
    """

    def __init__(self, signum: int, iteration: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at iteration {iteration}")
        self.signum = signum
        self.iteration = iteration


class StopSignals:
    """Turns SIGTERM and SIGINT into a request to stop after the current iteration (main thread only).

    The first signal is only noted (the loop checkpoints and stops); the handlers are then put back, so
    a second Ctrl-C or SIGTERM acts at once as usual.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _note(self, signum: int, _frame: Any) -> None:
        self.signum = self.signum or signum
        self._restore()

    def _restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def agreed(self, info: DistInfo) -> bool:
        """Whether any process got a signal: every process stops after the same iteration."""
        if info.world <= 1:
            return self.signum != 0
        flag = torch.tensor([float(self.signum)], dtype=torch.float64)
        all_reduce_sum(flag, info)
        if flag.item() and not self.signum:
            self.signum = int(signal.SIGTERM)
        return bool(flag.item())
