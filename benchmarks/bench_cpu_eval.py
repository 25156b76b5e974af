"""CPU inference benchmark: archc's eval pipeline against the eager reference ResNet.

The target (issue 3): the torch backend's eval pipeline on ResNet-50, batch 8, 224x224,
runs >= 1.7x faster than the eager reference, with outputs equal to 1e-4.

* eager reference: the hand-written ResNet of tests/reference_resnet.py, NCHW, eval mode,
  float32, under torch.inference_mode.
* archc: ``archc.compile(spec, mode="eval", weights=reference.state_dict())``: BN folded
  into the convs, ReLU and residual adds fused, channels_last. It takes the same NCHW batch
  (and converts it inside, so the conversion is timed), also under torch.inference_mode.

Both hold the same weights: the reference with random BN affine parameters and running
statistics, so that folding changes every conv. Two more archc rows show where the speed
comes from; they switch off parts of FusedConv2d, the module the torch backend lowers
fused_conv to:

* "eager epilogue": the same module with oneDNN fusion off: conv (with the folded bias),
  then ``add_`` and ``relu_`` as separate ops (the lowering before FusedConv2d);
* "out-of-place add": oneDNN conv+add+ReLU, but into a new tensor instead of the dead
  residual's buffer.

Runs alternate between the candidates, after warm-up runs of each. Reported: median and
minimum ms per batch, img/s (from the median), speed-up of the median over the eager
reference's median, and the largest absolute difference of the outputs from the reference.
It prints a markdown table with the machine; with --write it replaces the marked section of
BENCHMARKS.md.

Usage:
    python benchmarks/bench_cpu_eval.py [--runs 15] [--warmup 3] [--batch 8] [--size 224] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.reference_resnet
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import load_average, machine_info, replace_section  # noqa: E402

import archc  # noqa: E402
from tests import reference_resnet as ref  # noqa: E402

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN = "<!-- bench_cpu_eval:begin -->"
END = "<!-- bench_cpu_eval:end -->"
HEADING = "## Eval pipeline on CPU (issue 3)"

TARGET_RATIO = 1.7
TARGET_DIFF = 1e-4
DEPTHS = {f"resnet{d}": d for d in ref.IMAGENET_LAYERS}


def fused_convs(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if type(m).__name__ == "FusedConv2d"]


def candidates(spec: Path, depth: int, size: int) -> tuple[dict[str, torch.nn.Module], dict]:
    """The eager reference and the archc eval modules (same weights), and facts about them."""
    reference = ref.resnet(depth).eval()
    ref.randomise(reference)
    state = reference.state_dict()
    overrides = {"input_size": f"3x{size}x{size}"}

    def compiled() -> torch.nn.Module:
        return archc.compile(spec, mode="eval", overrides=overrides, weights=state)

    fused = compiled()
    convs = fused_convs(fused)
    eager_epilogue = compiled()
    for m in fused_convs(eager_epilogue):
        type(m).forward.__globals__["ONEDNN"] = False  # this module's own generated namespace
    out_of_place = compiled()
    for m in fused_convs(out_of_place):
        m.into_r = False
    mods = {
        "eager reference (tests/reference_resnet.py, NCHW)": reference,
        "archc eval pipeline (oneDNN fused conv+bias+add+ReLU, channels_last)": fused,
        "archc eval, eager epilogue (conv, then add_ and relu_)": eager_epilogue,
        "archc eval, oneDNN fused, out-of-place add": out_of_place,
    }
    info = {
        "fused_convs": len(convs),
        "with_residual_into_buffer": sum(m.into_r for m in convs),
        "params_reference": sum(p.numel() for p in reference.parameters()),
        "params_archc": sum(p.numel() for p in fused.parameters()),
    }
    return mods, info


def measure(mods: dict[str, torch.nn.Module], x: torch.Tensor, runs: int, warmup: int) -> dict[str, dict]:
    """Alternating timed forwards under inference_mode; outputs compared with the first (reference)."""
    names = list(mods)
    times: dict[str, list[float]] = {k: [] for k in names}
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        want = mods[names[0]](x)
        for k in names:
            diffs[k] = (mods[k](x) - want).abs().max().item()
        for _ in range(warmup):
            for k in names:
                mods[k](x)
        for _ in range(runs):
            for k in names:
                t = time.perf_counter()
                mods[k](x)
                times[k].append(time.perf_counter() - t)
    base = statistics.median(times[names[0]])
    out = {}
    for k in names:
        med = statistics.median(times[k])
        out[k] = {
            "median_ms": med * 1e3,
            "min_ms": min(times[k]) * 1e3,
            "img_s": x.shape[0] / med,
            "speedup": base / med,
            "speedup_min": min(times[names[0]]) / min(times[k]),
            "max_abs_diff": diffs[k],
            "runs_ms": [t * 1e3 for t in times[k]],
        }
    out["_scale"] = {"max_abs_output": want.abs().max().item()}
    return out


def machine() -> dict:
    """machine_info() plus what decides CPU conv speed: threads, ISA, oneDNN."""
    return {
        **machine_info(),
        "threads": torch.get_num_threads(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def render(res: dict, info: dict, m: dict, args: argparse.Namespace, command: str, loads: tuple[str, str]) -> str:
    names = [k for k in res if not k.startswith("_")]
    main_row = res[names[1]]
    ratio, diff = main_row["speedup"], main_row["max_abs_diff"]
    ok = ratio >= TARGET_RATIO and diff <= TARGET_DIFF
    lines = [
        f"`{args.spec}`, batch {args.batch}, 3x{args.size}x{args.size}, float32, eval mode, "
        f"torch.inference_mode; median of {args.runs} alternating runs after {args.warmup} warm-up runs each.",
        "",
        "| candidate | ms / batch (median) | ms (min) | img/s | speed-up vs eager (median; min) | max abs diff |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k in names:
        r = res[k]
        lines.append(
            f"| {k} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['img_s']:.1f} | "
            f"{r['speedup']:.2f}x; {r['speedup_min']:.2f}x | {r['max_abs_diff']:.1e} |"
        )
    verdict = "pass" if ok else "**missed**"
    lines += [
        "",
        f"- target: archc eval pipeline >= {TARGET_RATIO}x the eager reference, max abs diff <= {TARGET_DIFF:g}: "
        f"**{ratio:.2f}x** (median), max abs diff {diff:.1e} (largest |output| {res['_scale']['max_abs_output']:.1f})"
        f": {verdict}",
        f"- archc module: {info['fused_convs']} FusedConv2d, {info['with_residual_into_buffer']} of them add into "
        f"the dead residual's buffer; parameters {info['params_archc']:,} (reference {info['params_reference']:,}; "
        "BN folded into conv biases)",
        f"- command: `{command}`",
        f"- date: {m['date']}",
        f"- machine: {m['platform']}; {m['cpu']}; {m['cpu_count']} CPUs; torch uses {m['threads']} threads; "
        f"ATen CPU capability {m['isa']}; oneDNN (mkldnn) available: {'yes' if m['mkldnn'] else 'no'}",
        f"- versions: Python {m['python']}, torch {m['torch']}",
        f"- load average (1, 5, 15 min) before the runs: {loads[0]}; after: {loads[1]} "
        "(a shared machine: other processes use the same CPUs)",
        "- runs (ms): "
        + "; ".join(f"{k.split(' (')[0]}: {', '.join(f'{t:.0f}' for t in res[k]['runs_ms'])}" for k in names),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default="specs/resnet50.arch", help="an ImageNet ResNet spec (resnet18 ... resnet152)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--runs", type=int, default=15, help="timed runs per candidate (alternating)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per candidate first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--write", action="store_true", help="replace the marked section of BENCHMARKS.md")
    args = p.parse_args(argv)
    name = Path(args.spec).stem
    if name not in DEPTHS:
        p.error(f"--spec must be one of {', '.join(f'specs/{k}.arch' for k in DEPTHS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join(["python", "benchmarks/bench_cpu_eval.py", *(sys.argv[1:] if argv is None else argv)])

    torch.manual_seed(0)
    mods, info = candidates(ROOT / args.spec, DEPTHS[name], args.size)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    m = machine()
    before = load_average()
    res = measure(mods, x, args.runs, args.warmup)
    table = render(res, info, m, args, command, (before, load_average()))
    out(table)
    if args.write:
        replace_section(BEGIN, END, table, HEADING)
        out(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
