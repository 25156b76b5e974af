"""What `archc train` shows while it runs: a progress bar or plain lines, a heartbeat, throughput collapses.

On a terminal a rich bar; elsewhere (CI logs, pipes) a line per training record, and between records a
heartbeat line at least every HEARTBEAT_S seconds, so that a slow run (a detector at 0.3 img/s logs a record
every 25 iterations: minutes) still shows that it is alive. The img/s of every record and heartbeat is
compared with the run's recent best: one below COLLAPSE times the best of the last RECENT measurements is
called out in the line, since it usually means other processes took the CPUs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

HEARTBEAT_S = 30.0
RECENT = 20
COLLAPSE = 0.4


def is_percent(metric: str) -> bool:
    """Whether `metric` is a fraction shown in percent: errors (top-1, top-5) and COCO APs."""
    return metric.endswith("error") or metric.startswith("AP")


def format_metrics(metrics: Mapping[str, Any], sep: str = "  ") -> str:
    """`top5_error 7.20%  AP50 83.0%  loss 0.3141`: fractions in percent, None as n/a, non-numbers left out."""
    shown = []
    for k, v in metrics.items():
        if v is None:
            shown.append(f"{k} n/a")
        elif isinstance(v, float):
            shown.append(f"{k} {100 * v:.2f}%" if is_percent(k) else f"{k} {v:.4g}")
    return sep.join(shown)


class Throughput:
    """The img/s of one run's records and heartbeats; tells a collapse from the run's own recent best.

    A measurement collapses when it is below `ratio` times the best of the previous `recent` ones. A run
    that starts slowly (warm-up, the first batch) does not collapse: its best is still low.

    Args:
        recent: how many earlier measurements the best is taken over.
        ratio: the fraction of that best below which a measurement collapsed.
    """

    def __init__(self, recent: int = RECENT, ratio: float = COLLAPSE) -> None:
        self.rates: deque[float] = deque(maxlen=recent)
        self.ratio = ratio

    def observe(self, img_s: float) -> float | None:
        """Record one measurement; the recent best it collapsed from, or None."""
        best = max(self.rates, default=None)
        self.rates.append(img_s)
        return best if best is not None and img_s < self.ratio * best else None


class Progress:
    """The progress display of one training run (rank 0's; disabled elsewhere).

    Args:
        enabled: show anything at all.
        total: the run's last iteration.
        start: the iteration it starts at.
        device: where it trains ("cpu", "cuda:0"): a collapse on the CPU suggests --threads.
        clock: seconds, for the heartbeat (a test's fake clock).
        heartbeat_s: the longest time without a line when not on a terminal.
    """

    def __init__(
        self,
        enabled: bool,
        total: int,
        start: int,
        device: str = "cpu",
        clock: Callable[[], float] = time.monotonic,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        from archc.console import make_console

        self.enabled = enabled
        self.total = total
        self.device = device
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.throughput = Throughput()
        self.console = make_console(stderr=True)
        self.bar = None
        self._mark(start)
        if enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def _mark(self, done: int) -> None:
        """Start the heartbeat's window at iteration `done`, now."""
        self.t_mark = self.clock()
        self.it_mark = done
        self.images = 0

    def _collapse(self, img_s: float) -> str:
        """The note for a collapsed measurement ("" for a normal one)."""
        best = self.throughput.observe(img_s)
        if best is None:
            return ""
        note = f"  SLOW: {img_s:.1f} img/s, under {COLLAPSE:.0%} of this run's recent best {best:.1f}"
        if self.device == "cpu":
            import torch

            threads = torch.get_num_threads()
            note += "; are other processes busy on these CPUs?"
            if threads > 1:
                note += f" ({threads} threads: try --threads 1)"
        return note

    def tick(self, done: int, images: int) -> None:
        """An iteration of `images` images done between records; a heartbeat when the last line is old."""
        if not self.enabled:
            return
        self.images += images
        if self.bar is not None:
            self.bar.update(self.task, completed=done)
            return
        seconds = self.clock() - self.t_mark
        if seconds < self.heartbeat_s or done >= self.total:
            return
        img_s = self.images / max(seconds, 1e-9)
        its = done - self.it_mark
        plural = "" if its == 1 else "s"
        line = f"iter {done}/{self.total}: {img_s:.1f} img/s ({its} iteration{plural} in {seconds:.0f} s)"
        self.console.print(line + self._collapse(img_s), highlight=False, soft_wrap=True)
        self._mark(done)

    def update(self, done: int, rec: dict[str, Any]) -> None:
        """A training record (loss, error, lr, img/s) at iteration `done`."""
        text = (
            f"loss {rec['loss']:.4f}  err {100 * rec['error']:.2f}%  lr {rec['lr']:.4g}  {rec['img_s']:.0f} img/s"
            if "error" in rec
            else f"loss {rec['loss']:.4f}  lr {rec['lr']:.4g}  {rec['img_s']:.1f} img/s"
        )
        text += self._collapse(rec["img_s"])
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=text)
        elif self.enabled:
            self.console.print(f"iter {done}: {text}", highlight=False, soft_wrap=True)
        self._mark(done)

    def test(self, done: int, metrics: dict[str, Any]) -> None:
        """The test metrics at iteration `done` (printed after the evaluation, which restarts the heartbeat)."""
        self._mark(done)
        if self.enabled:
            self.console.print(f"iter {done}: test {format_metrics(metrics)}", highlight=False, soft_wrap=True)
