"""archc train's loop overhead: its img/s against a bare hand-written loop over the same compiled module.

Both train the same compiled module (archc.compile, train mode) with the same SGD settings on the same
synthetic data and batch size: the bare loop indexes pre-built float batches; `archc train` runs its whole
loop (data layer with the recipe's augmentation, schedule, metrics, progress, test evaluations switched off
by a long eval interval). Each side runs `--reps` times, alternating, and the medians are compared over the
timed iterations (the first `--warmup` are excluded on both sides).

    python benchmarks/bench_train_loop.py                    # prints a table
    python benchmarks/bench_train_loop.py --write            # also updates BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import load_average, machine_info, replace_section  # noqa: E402

BEGIN, END = "<!-- bench_train_loop:begin -->", "<!-- bench_train_loop:end -->"


def bare_loop(spec: str, batch: int, iters: int, warmup: int, seed: int) -> float:
    """img/s of the simplest loop: forward, cross-entropy, backward, SGD step on prepared tensors."""
    import archc

    torch.manual_seed(seed)
    model = archc.compile(spec)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    shape = archc.build(spec, lower=False).graph.input.shape
    xs = [torch.rand((batch, *shape), generator=g) for _ in range(4)]
    ys = [torch.randint(0, 10, (batch,), generator=g) for _ in range(4)]
    t0 = 0.0
    for i in range(iters):
        if i == warmup:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(xs[i % 4]), ys[i % 4])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (iters - warmup) * batch / (time.perf_counter() - t0)


def archc_loop(spec: str, batch: int, iters: int, warmup: int, seed: int, workers: int | None) -> float:
    """img/s of `archc train` over the same iterations, from the wall time between its metrics records."""
    from archc.commands.train import resolve_recipe
    from archc.train.config import TrainConfig
    from archc.train.loop import Trainer

    r = resolve_recipe("cifar", (3, 32, 32), "synthetic", iters, batch, None, {"warmup_lr": "none"})
    # one record at the end of the warm-up and one at the end: the timed span is exactly iters - warmup
    r = dataclasses.replace(r, log_every=warmup, eval_every=iters * 10)
    with tempfile.TemporaryDirectory() as runs:
        cfg = TrainConfig(
            spec=spec,
            recipe=r,
            data=f"synthetic:{max(1024, batch * 8)}",
            runs=Path(runs),
            seed=seed,
            progress=False,
            workers=workers,
            checkpoint_every=iters * 10,
        )
        trainer = Trainer(cfg, log=lambda _m: None)
        trainer.run()
        recs = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in recs if x["split"] == "train"]
    first = next(x for x in train if x["iter"] == warmup)
    last = train[-1]
    return (last["iter"] - warmup) * batch / (last["time"] - first["time"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(ROOT / "specs/cifar/resnet20.arch"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="archc train --workers (default: its own default)")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    a = ap.parse_args()
    bare, ours = [], []
    for rep in range(a.reps):
        bare.append(bare_loop(a.spec, a.batch, a.iters, a.warmup, rep))
        ours.append(archc_loop(a.spec, a.batch, a.iters, a.warmup, rep, a.workers))
        print(f"rep {rep}: bare {bare[-1]:.1f} img/s, archc train {ours[-1]:.1f} img/s", flush=True)
    mb, mo = statistics.median(bare), statistics.median(ours)
    info = machine_info()
    spec = Path(a.spec).resolve().relative_to(ROOT) if Path(a.spec).resolve().is_relative_to(ROOT) else a.spec
    cmd = f"python benchmarks/bench_train_loop.py --batch {a.batch} --iters {a.iters} --reps {a.reps}"
    cmd += f" --workers {a.workers}" if a.workers is not None else ""
    text = (
        f"Measured {info['date']} on {info['cpu']} ({info['cpu_count']} cores), torch {info['torch']}, "
        f"load average before/after {info['load']} / {load_average()}.\n"
        f"Command: `{cmd}{' --write' if a.write else ''}`\n\n"
        f"| net | batch | timed iterations | bare loop img/s (median of {a.reps}) | archc train img/s | ratio |\n"
        f"|---|---|---|---|---|---|\n"
        f"| {spec} | {a.batch} | {a.iters - a.warmup} | {mb:.1f} | {mo:.1f} | {mo / mb:.3f} |\n\n"
        f"Every run: bare {', '.join(f'{v:.1f}' for v in bare)}; archc train {', '.join(f'{v:.1f}' for v in ours)}.\n"
    )
    print(text)
    if a.write:
        replace_section(BEGIN, END, text, "## Training loop overhead on CPU (issue 4)")


if __name__ == "__main__":
    main()
