"""GPU benchmarks (issue 3): archc's modules against eager PyTorch and torch.compile.

Runs `archc bench` (archc/bench/runner.py) once per configuration below, each in a fresh
process so that every torch.compile is a cold compile, with --json, and renders one
markdown table with the targets of issue 3 and pass/fail:

  eval:  img/s >= 1.6x eager (the spec compiled with no passes: nn modules, cuDNN,
         channels_last, autocast) and >= 1.0x torch.compile(mode="max-autotune") of it;
  train: img/s >= 1.15x eager, peak memory <= 0.75x eager;
  both:  archc build + first step <= 1/10 of torch.compile's cold compile + first step.

A target passes when some archc backend meets it; the table shows every backend, and the
absolute figures also the hand-written reference ResNet (the `reference` baseline).

With --write it replaces the section between the bench_gpu markers of BENCHMARKS.md.
Without a CUDA GPU it measures nothing, writes nothing, says so and exits with status 1.

Usage:
    python benchmarks/bench_gpu.py [--write] [--iters 50] [--warmup 10] [--backend torch,triton] [--only resnet50]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import replace_section  # noqa: E402

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN = "<!-- bench_gpu:begin -->"
END = "<!-- bench_gpu:end -->"
NOT_MEASURED = "not measured yet"

# (label, spec, mode, batch): the table. ResNet-152 uses batch 128 so that its
# bf16 training step fits comfortably in 80 GB next to the other candidates' leftovers.
CONFIGS = [
    ("ResNet-50", "specs/resnet50.arch", "eval", 256),
    ("ResNet-50", "specs/resnet50.arch", "train", 256),
    ("ResNet-152", "specs/resnet152.arch", "eval", 128),
    ("ResNet-152", "specs/resnet152.arch", "train", 128),
    ("CIFAR ResNet-110", "specs/cifar/resnet110.arch", "eval", 128),
    ("CIFAR ResNet-110", "specs/cifar/resnet110.arch", "train", 128),
]
DTYPE = "bf16"
BACKENDS = ("torch", "triton")

# (mode, measurement, candidate field, target text, comparison)
TARGETS = [
    ("eval", "img/s vs eager", "speedup_vs_eager", ">= 1.6x", lambda v: v >= 1.6),
    ("eval", "img/s vs torch.compile (max-autotune)", "speedup_vs_compile", ">= 1.0x", lambda v: v >= 1.0),
    ("train", "img/s vs eager", "speedup_vs_eager", ">= 1.15x", lambda v: v >= 1.15),
    ("train", "peak memory vs eager", "mem_vs_eager", "<= 0.75x", lambda v: v <= 0.75),
    ("train", "img/s vs torch.compile", "speedup_vs_compile", "", None),
    (
        None,
        "archc build + first step / torch.compile cold compile + first step",
        "build_first_run_vs_compile",
        "<= 0.1",
        lambda v: v <= 0.1,
    ),
]


def command(spec: str, mode: str, batch: int | str, backends: tuple[str, ...], iters: int, warmup: int) -> list[str]:
    """The `archc bench` command line of one configuration."""
    return [
        "archc", "bench", spec, "--backend", ",".join(backends), "--baseline", "eager,reference,compile",
        "--mode", mode, "--batch", str(batch), "--dtype", DTYPE, "--iters", str(iters), "--warmup", str(warmup),
        "--json",
    ]  # fmt: skip


def run_one(cmd: list[str]) -> dict[str, Any]:
    """Run one `archc bench --json` in a fresh process; its result, or {"error": ...}."""
    proc = subprocess.run([sys.executable, "-m", "archc", *cmd[1:]], cwd=ROOT, capture_output=True, text=True)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}


def _cell(c: dict[str, Any] | None, key: str) -> str:
    if c is None:
        return NOT_MEASURED
    if c["status"] != "ok":
        return c["status"]
    v = c.get(key)
    return "n/a" if v is None else f"{v:.2f}x" if key != "build_first_run_vs_compile" else f"{v:.3f}"


def render(results: dict[tuple[str, str], dict[str, Any]] | None, info: dict[str, Any]) -> str:
    """The markdown of the marked section; `results` None gives the not-measured-yet table."""
    results = results or {}
    backends = info.get("backends", BACKENDS)
    head = ["net, mode, batch", "measurement", "target", *(f"archc[{b}]" for b in backends), "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, spec, mode, batch in CONFIGS:
        r = results.get((spec, mode))
        cands = {c["name"]: c for c in r.get("candidates", [])} if r and "error" not in r else {}
        for tmode, what, key, target, ok in TARGETS:
            if tmode not in (None, mode):
                continue
            row = [f"{label}, {mode}, {batch}", what, target]
            values = []
            for b in backends:
                c = cands.get(f"archc[{b}]") if r else None
                if r and "error" in r:
                    row.append(f"failed: {r['error']}")
                    continue
                row.append(_cell(c, key))
                if c and c["status"] == "ok" and c.get(key) is not None:
                    values.append(c[key])
            if r is None or ok is None:
                result = "" if ok is None else NOT_MEASURED
            else:
                result = "pass" if any(ok(v) for v in values) else "**FAIL**"
            row.append(result)
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    # Absolute figures, per configuration and candidate.
    names = ["eager", "reference", "torch.compile", *(f"archc[{b}]" for b in backends)]
    lines += [
        "| net, mode, batch | " + " | ".join(f"{n}: img/s, peak MiB" for n in names) + " |",
        "|" + " --- |" * (len(names) + 1),
    ]
    for label, spec, mode, batch in CONFIGS:
        r = results.get((spec, mode))
        cands = {c["name"]: c for c in r.get("candidates", [])} if r and "error" not in r else {}
        cells = []
        for n in names:
            c = cands.get(n)
            if r is None:
                cells.append(NOT_MEASURED)
            elif c is None or c["status"] != "ok":
                cells.append("failed" if c is None else c["status"])
            else:
                mem = c.get("peak_mem_mib")
                cells.append(f"{c['img_per_s']:,.0f}, {'n/a' if mem is None else f'{mem:,.0f}'}")
        lines.append(f"| {label}, {mode}, {batch} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"- command: `{info.get('command', 'python benchmarks/bench_gpu.py --write')}`, which runs, per row:")
    generic = command("SPEC", "MODE", "N", backends, info.get("iters", 50), info.get("warmup", 10))
    lines.append(f"  `{' '.join(generic)}` (a fresh process each, so every torch.compile is cold)")
    if not results:
        lines.append(f"- date, device, versions: {NOT_MEASURED} (no GPU has been lent to a session yet)")
        return "\n".join(lines) + "\n"
    first = next((r for r in results.values() if "error" not in r), {})
    v = first.get("versions", {})
    lines += [
        f"- date: {info['date']}",
        f"- device: {first.get('device', {}).get('name', 'unknown')}",
        f"- versions: Python {v.get('python')}, torch {v.get('torch')}, triton {v.get('triton')}, "
        f"CUDA {v.get('cuda')}, cuDNN {v.get('cudnn')}, archc {v.get('archc')}",
        f"- dtype {DTYPE} (autocast), channels_last, cudnn.benchmark on; median of {info['iters']} steps after "
        f"{info['warmup']} warm-up; train = forward + cross-entropy + backward + SGD(0.1, momentum 0.9, wd 1e-4)",
        f"- peak memory: {first.get('memory_metric')}",
    ]
    for (spec, mode), r in results.items():
        for c in r.get("candidates", []):
            if c.get("status") != "ok" and c.get("error"):
                lines.append(f"- {spec} {mode}, {c['name']}: {c['status']}: {c['error']}")
            elif c.get("output_close") is False:
                diff = c["max_abs_diff"]
                lines.append(f"- {spec} {mode}, {c['name']}: output differs from the interpreter's by {diff:.2e}")
            if "dispatch" in c:  # must read 0 fallbacks, or the row measured torch instead of the kernels
                d = c["dispatch"]
                calls = f"{d.get('kernel', 0)} kernel calls, {c['fallbacks']} torch fallbacks {d}"
                lines.append(f"- {spec} {mode}, {c['name']}: {calls}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="replace the bench_gpu section of BENCHMARKS.md")
    p.add_argument("--iters", type=int, default=50, help="timed steps per candidate (median)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps after the first")
    p.add_argument("--backend", default=",".join(BACKENDS), help="archc backends, comma-separated")
    p.add_argument("--only", default=None, help="run only the configurations whose spec contains this")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU is present on this machine; nothing measured, BENCHMARKS.md left as it is.")
        return 1
    backends = tuple(b.strip() for b in args.backend.split(",") if b.strip())
    info = {
        "command": " ".join(["python", "benchmarks/bench_gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "iters": args.iters,
        "warmup": args.warmup,
        "backends": backends,
    }
    results = {}
    for label, spec, mode, batch in CONFIGS:
        if args.only and args.only not in spec:
            continue
        cmd = command(spec, mode, batch, backends, args.iters, args.warmup)
        print(f"bench_gpu: {label} {mode} batch {batch}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        results[(spec, mode)] = run_one(cmd)
    text = render(results, info)
    print(text)
    if args.write:
        replace_section(BEGIN, END, text, "## GPU (issue 3)")
        print(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
