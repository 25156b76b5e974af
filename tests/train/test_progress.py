"""The progress display: plain lines without a terminal, a time-based heartbeat, throughput collapses."""

import io

import torch
from rich.console import Console

from archc.train.progress import COLLAPSE, Progress, Throughput, format_metrics


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _progress(clock, total=1000, device="cpu", heartbeat_s=30.0):
    p = Progress(True, total, 0, device, clock=clock, heartbeat_s=heartbeat_s)
    p.console = Console(file=io.StringIO(), width=200)  # not a terminal: plain lines
    return p


def _lines(p) -> list[str]:
    return p.console.file.getvalue().splitlines()


def test_heartbeat_between_records_with_a_fake_clock():
    clock = FakeClock()
    p = _progress(clock)
    for it in range(1, 4):  # iterations of 4 images, 10 s each: no line before 30 s
        clock.t += 10.0
        p.tick(it, 4)
        assert len(_lines(p)) == (1 if it >= 3 else 0)
    assert _lines(p)[0].startswith("iter 3/1000: 0.4 img/s (3 iterations in 30 s)")
    clock.t += 20.0
    p.tick(5, 4)
    assert len(_lines(p)) == 1  # 20 s since the heartbeat
    p.update(6, {"loss": 1.0, "lr": 0.1, "img_s": 0.4})  # a record restarts the heartbeat's window
    clock.t += 29.0
    p.tick(7, 4)
    assert len(_lines(p)) == 2
    clock.t += 1.0
    p.tick(8, 4)
    assert _lines(p)[-1].startswith("iter 8/1000: 0.3 img/s (2 iterations in 30 s)")


def test_evaluation_time_is_no_heartbeat_window():
    clock = FakeClock()
    p = _progress(clock)
    clock.t += 1.0
    p.tick(1, 8)
    clock.t += 300.0  # a long test pass
    p.test(1, {"AP50": 0.5})
    clock.t += 1.0
    p.tick(2, 8)
    assert _lines(p) == ["iter 1: test AP50 50.00%"]


def test_throughput_collapse_is_relative_to_the_recent_best():
    w = Throughput(recent=3, ratio=0.4)
    assert [w.observe(v) for v in (5.0, 20.0, 40.0)] == [None, None, None]  # a slow start is no collapse
    assert w.observe(15.0) == 40.0  # below 0.4 x 40
    assert w.observe(14.0) == 40.0
    assert w.observe(14.5) == 40.0
    assert w.observe(14.2) is None  # 40 left the last 3 measurements: the recent best is 15 now
    w2 = Throughput(recent=3, ratio=0.4)
    for v in (30.0, 30.0, 30.0):
        w2.observe(v)
    assert w2.observe(12.0) is None  # exactly 0.4 x 30 is not below it


def test_collapse_is_said_in_the_progress_line():
    clock = FakeClock()
    p = _progress(clock)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for it, rate in ((25, 40.0), (50, 38.0), (75, 9.0)):
            p.update(it, {"loss": 1.0, "error": 0.5, "lr": 0.1, "img_s": rate})
        # and a heartbeat that collapses: 1 image in 30 s against the best of 40
        clock.t += 30.0
        p.tick(76, 1)
    finally:
        torch.set_num_threads(before)
    lines = _lines(p)
    assert "SLOW" not in lines[0] and "SLOW" not in lines[1]
    assert f"SLOW: 9.0 img/s, under {COLLAPSE:.0%} of this run's recent best 40.0" in lines[2]
    assert "try --threads 1" in lines[2]
    assert "SLOW: 0.0 img/s" in lines[3]


def test_no_thread_hint_off_the_cpu():
    p = _progress(FakeClock(), device="cuda:0")
    p.update(1, {"loss": 1.0, "lr": 0.1, "img_s": 100.0})
    p.update(2, {"loss": 1.0, "lr": 0.1, "img_s": 10.0})
    assert "SLOW" in _lines(p)[1] and "--threads" not in _lines(p)[1]


def test_disabled_progress_prints_nothing():
    clock = FakeClock()
    p = Progress(False, 10, 0, clock=clock)
    p.console = Console(file=io.StringIO())
    clock.t += 100
    p.tick(1, 4)
    p.update(1, {"loss": 1.0, "lr": 0.1, "img_s": 1.0})
    p.test(1, {"error": 0.1})
    assert p.console.file.getvalue() == ""


def test_format_metrics_percent_for_errors_and_ap():
    text = format_metrics({"error": 0.0512, "top5_error": 0.01, "loss": 0.31416, "AP": 0.5, "APl": None, "images": 9})
    assert text == "error 5.12%  top5_error 1.00%  loss 0.3142  AP 50.00%  APl n/a"
