"""CPU inference benchmark: archc's eval pipeline (torch, onnxruntime and openvino backends) against its peers.

Per net (ResNet-50 and ResNet-18 by default) and batch size (1 and 8), float32, 224x224,
every candidate runs the same NCHW batch, in interleaved rounds after warm-up runs of each:
each round runs every candidate in turn (every other round in reverse order), one untimed
call and then `--block` timed calls back to back. The untimed call absorbs the switch from
the previous candidate (a runtime whose threads spin on after its call slows whoever comes
next), so every candidate is timed in steady state, and the interleaving spreads any drift
of the machine's load over all of them. Reported per candidate: median and minimum ms per
batch, img/s (from the median), the ratio of medians against eager NCHW and against
onnxruntime on the eager export, and the largest absolute difference of its output from
eager NCHW's. The load average is recorded before and after each table (the machine may be
shared).

* eager NCHW: the hand-written ResNet of archc/bench/reference.py, eval mode, under
  torch.inference_mode. Its BN affine parameters and running statistics are random, so
  folding changes every conv. Every candidate holds these weights.
* eager channels_last: the same module in channels_last; the batch is converted per call.
* torch.compile (freezing): torch.compile of the eager module with inductor's
  `freezing=True` (weights become constants, convs get oneDNN's prepacked weights); its
  first call, the cold compile, is reported on its own. `--no-compile` drops it.
* archc[torch]: `archc.compile(spec, mode="eval", weights=...)`: BN folded into the convs,
  ReLU and residual adds fused into one oneDNN call per conv, channels_last.
* archc[onnxruntime]: the same eval graph through the onnxruntime backend (archc's ONNX
  export of the folded, fused graph, run by an InferenceSession) with its defaults: threads
  spin inside a run and stop after it, and a batch of at least `--threads` samples is split
  into one slice per thread, each run through a one-thread session.
* archc[openvino]: the same eval graph through the openvino backend with its defaults: one
  compiled model per batch size (batch dimension fixed), float32, a batch of at least
  `--threads` samples split into one slice per stream (when openvino is installed).
* onnxruntime (eager export): the eager module exported by the same exporter
  (`archc.onnx_export.export_onnx`) and run by an InferenceSession with onnxruntime's
  defaults except the thread count: what a user who deploys with onnxruntime gets.
* OpenVINO (eager export): the same ONNX file compiled by OpenVINO for its CPU plugin
  (LATENCY hint, the same thread count, batch dimension dynamic), when openvino is installed.

`--ablation` adds archc[torch] with parts of FusedConv2d switched off: the oneDNN epilogue
fusion (conv, then add_ and relu_), the prepacked weights, the add into the dead residual.

ONNX Runtime and OpenVINO get `--threads` threads (default: torch's). `--profile` prints
(and with --write, records) where the time goes per op class for archc[torch] (torch.profiler)
and for onnxruntime (its own profiler) at each batch size.

Usage:
    python benchmarks/bench_cpu_eval.py [--specs resnet50,resnet18] [--batches 1,8] [--runs 15] [--block 3]
        [--warmup 3] [--threads N] [--no-compile] [--ablation] [--profile] [--write]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import load_average, machine_info, replace_section  # noqa: E402

import archc  # noqa: E402
from archc.bench import reference as ref  # noqa: E402
from archc.onnx_export import export_onnx  # noqa: E402

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN = "<!-- bench_cpu_eval:begin -->"
END = "<!-- bench_cpu_eval:end -->"
HEADING = "## Eval pipeline on CPU (issues 3 and 13)"
PROFILE_BEGIN = "<!-- bench_cpu_eval_profile:begin -->"
PROFILE_END = "<!-- bench_cpu_eval_profile:end -->"
PROFILE_HEADING = "### Where the time goes, per op class"

TARGET_RATIO = 1.7  # issue 3: archc[torch] vs eager NCHW, ResNet-50 batch 8
TARGET_DIFF = 1e-4
DEPTHS = {f"resnet{d}": d for d in ref.IMAGENET_LAYERS}
EAGER, PEER = "eager NCHW", "onnxruntime (eager export)"
ARCHC = ("archc[torch]", "archc[onnxruntime]", "archc[openvino]")

Runner = Callable[[torch.Tensor], Any]


def _ort_session(path: Path, threads: int, config: dict[str, str] | None = None, **extra: Any) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    for k, v in extra.items():
        setattr(so, k, v)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _numpy_runner(run: Callable[[np.ndarray], Any]) -> Runner:
    # x.numpy() shares the tensor's memory: no copy is timed for a contiguous float32 batch
    return lambda x: torch.from_numpy(np.asarray(run(x.numpy())))


def fused_convs(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if type(m).__name__ == "FusedConv2d"]


def build(
    name: str, size: int, threads: int, with_compile: bool, tmp: Path, ablation: bool = False
) -> tuple[dict[str, Runner], dict[str, Any], dict[str, Any]]:
    """Every candidate for one net (same weights), facts about them, and the objects --profile needs."""
    spec = ROOT / "specs" / f"{name}.arch"
    torch.manual_seed(0)
    reference = ref.randomise(ref.resnet(DEPTHS[name]).eval())
    state = reference.state_dict()
    overrides = {"input_size": f"3x{size}x{size}"}
    graph = archc.build(spec, mode="eval", overrides=overrides, lower=False).graph
    info: dict[str, Any] = {"build_s": {}}
    runners: dict[str, Runner] = {EAGER: reference}

    cl = copy.deepcopy(reference).to(memory_format=torch.channels_last)
    runners["eager channels_last"] = lambda x: cl(x.contiguous(memory_format=torch.channels_last))

    if with_compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights as constants, oneDNN weight prepacking
        compiled = torch.compile(copy.deepcopy(reference), dynamic=False)
        runners["torch.compile (freezing)"] = compiled

    t = time.perf_counter()
    at = archc.compile(spec, mode="eval", overrides=overrides, weights=state)
    info["build_s"]["archc[torch]"] = time.perf_counter() - t
    runners["archc[torch]"] = at

    def engine_backend(backend: str) -> torch.nn.Module:
        t = time.perf_counter()
        module = archc.compile(
            spec,
            mode="eval",
            overrides=overrides,
            weights=state,
            backend=backend,
            backend_options={"threads": threads},
        )
        with torch.inference_mode():
            module(x)  # export + session / compiled model: the backend builds them on the first call
        info["build_s"][f"archc[{backend}]"] = time.perf_counter() - t
        return module

    x = torch.randn(2, 3, size, size)
    runners["archc[onnxruntime]"] = ao = engine_backend("onnxruntime")

    peer_path = tmp / f"{name}_eager.onnx"
    t = time.perf_counter()
    export_onnx(reference, graph, x, peer_path, None, "dynamo")
    peer = _ort_session(peer_path, threads)
    info["build_s"][PEER] = time.perf_counter() - t
    runners[PEER] = _numpy_runner(lambda a: peer.run(None, {"input": a})[0])

    try:
        import openvino as ov
    except ImportError:
        info["openvino"] = None
    else:
        info["openvino"] = ov.__version__
        runners["archc[openvino]"] = engine_backend("openvino")
        t = time.perf_counter()
        core = ov.Core()
        cm = core.compile_model(
            str(peer_path), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        )
        request = cm.create_infer_request()
        info["build_s"]["OpenVINO (eager export)"] = time.perf_counter() - t
        runners["OpenVINO (eager export)"] = _numpy_runner(lambda a: request.infer({0: a})[0])

    if ablation:  # where archc[torch]'s speed comes from: parts of FusedConv2d switched off
        epilogue = archc.compile(spec, mode="eval", overrides=overrides, weights=state)
        for m in fused_convs(epilogue):
            type(m).forward.__globals__["ONEDNN"] = False  # this module's own generated namespace
        runners["archc[torch], eager epilogue (conv, then add_ and relu_)"] = epilogue
        unpacked = archc.compile(spec, mode="eval", overrides=overrides, weights=state)
        type(fused_convs(unpacked)[0]).prepack = False  # this module's own generated class
        runners["archc[torch], weights not prepacked"] = unpacked
        out_of_place = archc.compile(spec, mode="eval", overrides=overrides, weights=state)
        for m in fused_convs(out_of_place):
            m.into_r = False
        runners["archc[torch], out-of-place add"] = out_of_place

    info["fused_convs"] = sum(type(m).__name__ == "FusedConv2d" for m in at.modules())
    info["params_archc"] = sum(p.numel() for p in at.parameters())
    info["params_reference"] = sum(p.numel() for p in reference.parameters())
    return runners, info, {"archc_torch": at, "archc_ort": ao, "peer_path": peer_path}


def measure(runners: dict[str, Runner], x: torch.Tensor, runs: int, warmup: int, block: int = 3) -> dict[str, dict]:
    """Interleaved timed forwards under inference_mode; outputs compared with eager NCHW's.

    Each round runs every candidate in turn (every other round in reverse order): one untimed call, then
    `block` timed calls back to back. The untimed call absorbs the change of runtime (threads that another
    runtime left spinning, caches it filled), so the timed calls measure each candidate in steady state,
    as a process that serves one model sees it; block=1 times every call right after another candidate.
    """
    names = list(runners)
    times: dict[str, list[float]] = {k: [] for k in names}
    first: dict[str, float] = {}
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        for k in names:  # the first call: torch.compile compiles here (for this batch size)
            t = time.perf_counter()
            runners[k](x)
            first[k] = time.perf_counter() - t
        want = runners[EAGER](x)
        for k in names:
            diffs[k] = (runners[k](x) - want).abs().max().item()
        for _ in range(warmup):
            for k in names:
                runners[k](x)
        for i in range(runs):
            for k in names if i % 2 == 0 else names[::-1]:
                if block > 1:
                    runners[k](x)
                for _ in range(block):
                    t = time.perf_counter()
                    runners[k](x)
                    times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(times[k]) for k in names}
    out: dict[str, dict] = {}
    for k in names:
        out[k] = {
            "median_ms": med[k] * 1e3,
            "min_ms": min(times[k]) * 1e3,
            "img_s": x.shape[0] / med[k],
            "vs_eager": med[EAGER] / med[k],
            "vs_peer": med[PEER] / med[k],
            "max_abs_diff": diffs[k],
            "first_s": first[k],
            "runs_ms": [t * 1e3 for t in times[k]],
        }
    out["_scale"] = {"max_abs_output": want.abs().max().item()}
    return out


def machine() -> dict:
    """machine_info() plus what decides CPU conv speed: threads, ISA, oneDNN, runtimes."""
    import onnxruntime as ort

    return {
        **machine_info(),
        "threads": torch.get_num_threads(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "onnxruntime": ort.__version__,
    }


def render_table(name: str, batch: int, res: dict, info: dict, loads: tuple[str, str]) -> list[str]:
    names = [k for k in res if not k.startswith("_")]
    lines = [
        f"**{name}, batch {batch}** (load average before: {loads[0]}; after: {loads[1]})",
        "",
        "| candidate | ms / batch (median) | ms (min) | img/s | vs eager NCHW | vs onnxruntime (eager export) "
        "| max abs diff | first call s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in names:
        r = res[k]
        lines.append(
            f"| {k} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['img_s']:.1f} | {r['vs_eager']:.2f}x | "
            f"{r['vs_peer']:.2f}x | {r['max_abs_diff']:.1e} | {r['first_s']:.2f} |"
        )
    lines += [
        "",
        "runs (ms): " + "; ".join(f"{k}: {', '.join(f'{t:.0f}' for t in res[k]['runs_ms'])}" for k in names),
        "",
    ]
    return lines


def verdicts(results: dict[tuple[str, int], dict]) -> list[str]:
    """The targets: issue 3 (archc[torch] >= 1.7x eager, R50 b8) and issue 13 (best archc >= onnxruntime)."""
    lines = []
    r = results.get(("resnet50", 8))
    if r is not None:
        a = r["archc[torch]"]
        ok = a["vs_eager"] >= TARGET_RATIO and a["max_abs_diff"] <= TARGET_DIFF
        lines.append(
            f"- issue 3 target: archc[torch] >= {TARGET_RATIO}x eager NCHW on resnet50, batch 8, max abs diff <= "
            f"{TARGET_DIFF:g}: **{a['vs_eager']:.2f}x**, {a['max_abs_diff']:.1e}: {'pass' if ok else '**missed**'}"
        )
    for batch in sorted({b for n, b in results if n == "resnet50"}):
        r = results[("resnet50", batch)]
        best = max((k for k in ARCHC if k in r), key=lambda k: r[k]["vs_peer"])
        ok = r[best]["vs_peer"] >= 1.0
        lines.append(
            f"- issue 13 target, resnet50 batch {batch}: best archc backend ({best}) vs onnxruntime on the eager "
            f"export: **{r[best]['vs_peer']:.2f}x** (ratio of medians; "
            f"archc[torch] {r['archc[torch]']['vs_peer']:.2f}x): "
            f"{'pass' if ok else '**missed**'}"
        )
    return lines


# --- per-op profiles ---------------------------------------------------------------------------
# op class -> (torch profiler keys of archc[torch], onnxruntime op types of the optimised session)
OP_CLASSES = (
    (
        "conv (+ folded bias, residual add, ReLU fused in)",
        ("mkldnn::_convolution_pointwise", "aten::convolution"),
        ("Conv",),
    ),
    ("max pool", ("max_pool",), ("MaxPool",)),
    ("global average pool", ("adaptive_avg_pool", "aten::mean"), ("GlobalAveragePool", "ReduceMean")),
    ("linear", ("aten::linear", "aten::addmm"), ("Gemm", "MatMul")),
    (
        "layout conversion (torch: NCHW input to channels_last; onnxruntime: NCHWc reorders)",
        ("aten::contiguous", "aten::copy_", "aten::clone"),
        ("ReorderInput", "ReorderOutput", "Transpose"),
    ),
    ("residual add / ReLU not fused into a conv", ("aten::add", "aten::relu"), ("Add", "Sum", "Relu")),
)
TORCH, ORT = 1, 2


def _classify(op: str, which: int) -> str:
    for row in OP_CLASSES:
        if any(k in op for k in row[which]):
            return row[0]
    return "other (allocation, views, dispatch)"


def profile_torch(module: torch.nn.Module, x: torch.Tensor, reps: int) -> dict[str, float]:
    """ms per forward by op class (self CPU time of the top-level ATen / oneDNN ops)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        module(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                module(x)
    out: dict[str, float] = {}
    for e in prof.key_averages():
        label = _classify(e.key, TORCH)
        out[label] = out.get(label, 0.0) + e.self_cpu_time_total / 1e3 / reps
    return out


def profile_ort(path: Path, x: torch.Tensor, threads: int, reps: int, tmp: Path) -> dict[str, float]:
    """ms per run by op class, from onnxruntime's own profiler (node kernel times)."""
    import json

    sess = _ort_session(path, threads, enable_profiling=True, profile_file_prefix=str(tmp / "ort_profile"))
    a = x.numpy()
    sess.run(None, {"input": a})
    for _ in range(reps):
        sess.run(None, {"input": a})
    trace = json.loads(Path(sess.end_profiling()).read_text())
    out: dict[str, float] = {}
    runs = reps + 1
    for ev in trace:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        label = _classify(ev.get("args", {}).get("op_name", ""), ORT)
        out[label] = out.get(label, 0.0) + ev["dur"] / 1e3 / runs
    return out


def render_profile(rows: list[tuple[str, int, dict[str, float], dict[str, float]]], loads: tuple[str, str]) -> str:
    lines = [
        "Self time per forward by op class (ms), archc[torch] under torch.profiler and archc's ONNX export under "
        "onnxruntime's profiler (node kernel times; the session's own overhead is not in them). "
        f"Load average before: {loads[0]}; after: {loads[1]}.",
        "",
    ]
    for name, batch, t, o in rows:
        labels = [row[0] for row in OP_CLASSES] + [_classify("", TORCH)]
        seen = [lb for lb in labels if lb in t or lb in o]
        lines += [
            f"**{name}, batch {batch}**",
            "",
            "| op class | archc[torch] ms | onnxruntime ms | torch / onnxruntime |",
            "| --- | --- | --- | --- |",
        ]
        for lb in seen + ["total"]:
            a, b = (sum(t.values()), sum(o.values())) if lb == "total" else (t.get(lb, 0.0), o.get(lb, 0.0))
            lines.append(f"| {lb} | {a:.1f} | {b:.1f} | {f'{a / b:.2f}x' if b >= 0.05 else '-'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", default="resnet50,resnet18", help="ImageNet ResNets, comma-separated")
    p.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--runs", type=int, default=15, help="rounds (each candidate in turn, alternating order)")
    p.add_argument("--block", type=int, default=3, help="timed calls per candidate per round, after one untimed")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per candidate first")
    p.add_argument("--threads", type=int, default=None, help="threads for torch, onnxruntime and OpenVINO")
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile (its compile takes minutes)")
    p.add_argument("--ablation", action="store_true", help="archc[torch] with parts of FusedConv2d switched off")
    p.add_argument("--profile", action="store_true", help="per-op-class profiles of archc[torch] and onnxruntime")
    p.add_argument("--write", action="store_true", help="replace the marked sections of BENCHMARKS.md")
    args = p.parse_args(argv)
    specs = [s.strip() for s in args.specs.split(",") if s.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    bad = [s for s in specs if s not in DEPTHS]
    if bad:
        p.error(f"--specs: unknown {', '.join(bad)}; choose from {', '.join(DEPTHS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    command = " ".join(["python", "benchmarks/bench_cpu_eval.py", *(sys.argv[1:] if argv is None else argv)])

    m = machine()
    results: dict[tuple[str, int], dict] = {}
    lines = [
        f"float32, 3x{args.size}x{args.size}, eval mode, torch.inference_mode, {threads} threads for every runtime; "
        f"{args.runs} alternating rounds after {args.warmup} warm-up runs each; per round and candidate "
        + (f"one untimed call, then {args.block} timed calls; " if args.block > 1 else "one timed call; ")
        + "medians over all timed calls; ratios are of medians.",
        "",
    ]
    profiles: list[tuple[str, int, dict[str, float], dict[str, float]]] = []
    prof_loads = [load_average(), ""]
    with tempfile.TemporaryDirectory(prefix="bench_cpu_eval-") as tmp_dir:
        tmp = Path(tmp_dir)
        for name in specs:
            runners, info, objs = build(name, args.size, threads, not args.no_compile, tmp, args.ablation)
            builds = ", ".join(f"{k} {v:.1f} s" for k, v in info["build_s"].items())
            lines.append(
                f"{name}: build (until ready to run) {builds}; {info['fused_convs']} FusedConv2d in archc[torch]"
            )
            lines.append("")
            archc_onnx = tmp / f"{name}_archc.onnx"
            if args.profile:
                objs["archc_ort"].export(archc_onnx)
            for batch in batches:
                x = torch.randn(batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
                before = load_average()
                res = measure(runners, x, args.runs, args.warmup, args.block)
                results[(name, batch)] = res
                lines += render_table(name, batch, res, info, (before, load_average()))
                if args.profile:
                    reps = max(3, args.runs // 3)
                    profiles.append(
                        (
                            name,
                            batch,
                            profile_torch(objs["archc_torch"], x, reps),
                            profile_ort(archc_onnx, x, threads, reps, tmp),
                        )
                    )
            del runners, objs
    prof_loads[1] = load_average()
    lines += verdicts(results)
    lines += [
        f"- command: `{command}`",
        f"- date: {m['date']}",
        f"- machine: {m['platform']}; {m['cpu']}; {m['cpu_count']} CPUs; {threads} threads; ATen CPU capability "
        f"{m['isa']}; oneDNN (mkldnn) available: {'yes' if m['mkldnn'] else 'no'}",
        f"- versions: Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}"
        + (f", OpenVINO {info['openvino']}" if info.get("openvino") else ", OpenVINO not installed"),
    ]
    table = "\n".join(lines) + "\n"
    out(table)
    prof_text = render_profile(profiles, (prof_loads[0], prof_loads[1])) if profiles else ""
    if prof_text:
        out(prof_text)
    if args.write:
        replace_section(BEGIN, END, table, HEADING)
        if prof_text:
            replace_section(PROFILE_BEGIN, PROFILE_END, prof_text, PROFILE_HEADING)
        out(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
