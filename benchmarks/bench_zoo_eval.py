"""CPU inference of zoo nets: archc's eval pipeline against eager PyTorch of the same spec.

Per spec, float32, batch 8 (default), 224x224: eager is the spec compiled with no optimisation
passes (standard nn modules, NCHW, eval mode, random weights and BN statistics); archc is
`archc.compile(spec, mode="eval", weights=<eager's state_dict>)` (BN folded, activations and
residual adds fused, channels_last). The two run in turns (one forward each, repeated) after
warm-up runs, under torch.inference_mode; reported: median ms per batch of each, the ratio of
medians (eager / archc: > 1 means archc is faster), and the largest output difference. The load
average is recorded before and after (the machine may be shared).

Usage:
    python benchmarks/bench_zoo_eval.py [--specs resnet50,zoo/mobilenet_v2,...] [--batch 8] [--runs 9] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import load_average, machine_info, publish  # noqa: E402

import archc  # noqa: E402
import archc.api  # noqa: E402
from archc.bench.reference import randomise  # noqa: E402

BEGIN, END = "<!-- bench_zoo_eval:begin -->", "<!-- bench_zoo_eval:end -->"
HEADING = "## Zoo nets, CPU eval pipeline against eager (batch 8)"
DEFAULT = "resnet50,zoo/mobilenet_v2,zoo/convnext_tiny,zoo/densenet121"


def _median_ms(fn, x: torch.Tensor, times: list[float]) -> None:
    t0 = time.perf_counter()
    fn(x)
    times.append((time.perf_counter() - t0) * 1e3)


def measure(spec: str, batch: int, size: int, runs: int, warmup: int) -> dict:
    """Time eager and archc's eval module of `spec` in turns; return medians, ratio and max difference."""
    torch.manual_seed(0)
    sets = {"input_size": f"3x{size}x{size}"} if size != 224 else {}
    eager = archc.api.build(spec, mode="train", passes=[], overrides=sets).module.eval()
    randomise(eager)
    opt = archc.compile(spec, mode="eval", overrides=sets, weights=eager.state_dict()).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        diff = (eager(x) - opt(x)).abs().max().item()
        for _ in range(warmup):
            eager(x)
            opt(x)
        te: list[float] = []
        ta: list[float] = []
        for _ in range(runs):
            _median_ms(eager, x, te)
            _median_ms(opt, x, ta)
    me, ma = statistics.median(te), statistics.median(ta)
    return {"spec": spec, "eager_ms": me, "archc_ms": ma, "ratio": me / ma, "diff": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--specs", default=DEFAULT, help="catalogue names or paths, comma-separated")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--runs", type=int, default=9, help="timed runs of each, in turns")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--write", action="store_true", help="replace the marked section of BENCHMARKS.md")
    a = p.parse_args()
    before = load_average()
    rows = [measure(s, a.batch, a.size, a.runs, a.warmup) for s in a.specs.split(",")]
    after = load_average()
    info = machine_info()
    lines = [
        "| net | eager ms/batch (median) | archc eval ms/batch (median) | speed-up (eager / archc) | max abs diff |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| `{r['spec']}` | {r['eager_ms']:.1f} | {r['archc_ms']:.1f} | {r['ratio']:.2f}x | {r['diff']:.1e} |"
        )
    cmd = "python benchmarks/bench_zoo_eval.py " + " ".join(sys.argv[1:])
    text = "\n".join(lines) + "\n\n"
    text += f"- command: `{cmd.strip()}`\n- date: {info['date']}\n"
    text += f"- machine: {info['platform']}; {info['cpu']}; {info['cpu_count']} CPUs"
    text += f" (torch uses {torch.get_num_threads()} threads)\n"
    text += f"- versions: Python {info['python']}, torch {info['torch']}\n"
    text += f"- batch {a.batch}, {a.size}x{a.size}, float32, {a.runs} timed runs of each in turns"
    text += f" after {a.warmup} warm-up\n"
    text += f"- load average (1, 5, 15 min) before: {before}; after: {after} (other processes share the CPUs)\n"
    publish(text, a.write, BEGIN, END, HEADING)


if __name__ == "__main__":
    main()
