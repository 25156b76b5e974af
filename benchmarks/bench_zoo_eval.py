"""CPU inference of zoo nets: archc's eval backends against eager PyTorch and onnxruntime of the same spec.

Per spec and batch size (1 and 8 by default), float32, 224x224, every candidate holds the same
random weights and BN statistics and runs the same batch:

* eager NCHW: the spec compiled with no optimisation passes (standard nn modules, NCHW, eval mode).
* archc[torch]: `archc.compile(spec, mode="eval", weights=<eager's state_dict>)` (BN folded,
  activations and residual adds fused, channels_last).
* archc[onnxruntime], archc[openvino]: the same eval graph through the inference-engine backends,
  with their defaults and the same thread count (openvino when it is installed).
* onnxruntime (eager export): the eager module exported by archc's exporter and run by an
  InferenceSession with onnxruntime's defaults but the thread count: what a user who deploys with
  onnxruntime gets without archc.

They run in interleaved rounds as in bench_cpu_eval.py (each candidate one untimed call, then
`--block` timed calls, every other round in reverse order), under torch.inference_mode; reported:
median ms per batch of each, eager / archc[torch], the best archc backend against onnxruntime on
the eager export, and the largest output difference from eager. The load average is recorded
before and after (the machine may be shared).

Usage:
    python benchmarks/bench_zoo_eval.py [--specs resnet50,zoo/mobilenet_v2,...] [--batches 1,8] [--runs 7]
        [--block 3] [--write]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_cpu_eval import EAGER, PEER, _numpy_runner, _ort_session, measure  # noqa: E402
from report import load_average, machine_info, publish  # noqa: E402

import archc  # noqa: E402
import archc.api  # noqa: E402
from archc.bench.reference import randomise  # noqa: E402
from archc.onnx_export import export_onnx  # noqa: E402

BEGIN, END = "<!-- bench_zoo_eval:begin -->", "<!-- bench_zoo_eval:end -->"
HEADING = "## Zoo nets, CPU eval pipeline against eager and onnxruntime"
DEFAULT = "resnet50,zoo/mobilenet_v2,zoo/convnext_tiny,zoo/densenet121"
ENGINES = tuple(b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b))
ARCHC = ("archc[torch]", *(f"archc[{b}]" for b in ENGINES))


def candidates(spec: str, size: int, threads: int, tmp: Path) -> dict[str, Any]:
    """Every candidate for `spec`, holding the eager module's random weights."""
    torch.manual_seed(0)
    sets = {"input_size": f"3x{size}x{size}"} if size != 224 else {}
    built = archc.api.build(spec, mode="train", passes=[], overrides=sets)
    eager = randomise(built.module.eval())
    state = eager.state_dict()
    out: dict[str, Any] = {EAGER: eager}
    out["archc[torch]"] = archc.compile(spec, mode="eval", overrides=sets, weights=state)
    for b in ENGINES:
        out[f"archc[{b}]"] = archc.compile(
            spec, mode="eval", overrides=sets, weights=state, backend=b, backend_options={"threads": threads}
        )
    path = tmp / "eager.onnx"
    export_onnx(eager, built.graph, torch.zeros(2, 3, size, size), path, None, "dynamo")
    session = _ort_session(path, threads)
    out[PEER] = _numpy_runner(lambda a: session.run(None, {"input": a})[0])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--specs", default=DEFAULT, help="catalogue names or paths, comma-separated")
    p.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--runs", type=int, default=7, help="interleaved rounds")
    p.add_argument("--block", type=int, default=3, help="timed calls per candidate per round, after one untimed")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--write", action="store_true", help="replace the marked section of BENCHMARKS.md")
    a = p.parse_args()
    threads = torch.get_num_threads()
    batches = [int(b) for b in a.batches.split(",") if b.strip()]
    before = load_average()
    names = [EAGER, *ARCHC, PEER]
    lines = [
        "| net | batch | " + " | ".join(f"{n} ms" for n in names) + " | eager / archc[torch] "
        "| best archc / onnxruntime (eager export) | max abs diff |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="bench_zoo_eval-") as tmp:
        for spec in a.specs.split(","):
            runners = candidates(spec, a.size, threads, Path(tmp))
            for batch in batches:
                x = torch.randn(batch, 3, a.size, a.size, generator=torch.Generator().manual_seed(1))
                res = measure(runners, x, a.runs, a.warmup, a.block)
                best = max(ARCHC, key=lambda k: res[k]["vs_peer"])
                diff = max(res[k]["max_abs_diff"] for k in names)
                lines.append(
                    f"| `{spec}` | {batch} | "
                    + " | ".join(f"{res[n]['median_ms']:.1f}" for n in names)
                    + f" | {res['archc[torch]']['vs_eager']:.2f}x | {best}: {res[best]['vs_peer']:.2f}x | {diff:.1e} |"
                )
            del runners
    after = load_average()
    info = machine_info()
    cmd = "python benchmarks/bench_zoo_eval.py " + " ".join(sys.argv[1:])
    text = "\n".join(lines) + "\n\n"
    text += f"- command: `{cmd.strip()}`\n- date: {info['date']}\n"
    text += f"- machine: {info['platform']}; {info['cpu']}; {info['cpu_count']} CPUs"
    text += f" ({threads} threads for every runtime)\n"
    versions = [f"Python {info['python']}", f"torch {info['torch']}"]
    for b in ENGINES:
        versions.append(f"{b} {importlib.import_module(b).__version__}")
    text += f"- versions: {', '.join(versions)}\n"
    text += f"- {a.size}x{a.size}, float32; {a.runs} interleaved rounds after {a.warmup} warm-up calls each; per round"
    text += f" and candidate one untimed call, then {a.block} timed; medians over the timed calls\n"
    text += f"- load average (1, 5, 15 min) before: {before}; after: {after} (other processes share the CPUs)\n"
    publish(text, a.write, BEGIN, END, HEADING)


if __name__ == "__main__":
    main()
