"""The measurements behind `archc bench`: archc's modules against eager PyTorch of the same spec.

For one spec, every candidate runs the same step on the same synthetic batch:

* eager (the baseline of every spec): the spec compiled with no optimisation passes by the
  torch backend, i.e. the network as standard nn modules (nn.Conv2d, nn.BatchNorm2d, ...)
  in eager mode;
* reference: the hand-written ResNet of archc.bench.reference, where one matches the spec
  (the paper's nets), as a second baseline that shares no code with archc;
* archc[backend]: the spec through its pass pipeline, with each requested backend;
* torch.compile: torch.compile of the eager baseline.

The step:

* train: forward, cross-entropy loss, backward and an SGD step with the paper's
  optimizer (lr 0.1, momentum 0.9, weight decay 1e-4);
* eval: a forward under torch.inference_mode.

dtype "bf16" runs every candidate's forward (and loss) under torch.autocast(bfloat16);
the parameters stay float32. The input is channels_last for everyone, and the eager
baseline and the reference are converted to channels_last, as is archc's module (its graph asks for it).
On a GPU cuDNN's autotuner is on (torch.backends.cudnn.benchmark).

Per candidate: the first step is timed on its own (for archc it is the "first run"
after the build, for torch.compile it is the cold compile), then `warmup` untimed
steps, then `iters` timed steps, each followed by a device synchronisation; img/s is
batch / median step time. Peak memory is measured over the timed steps (archc.bench.memory says how,
on a GPU and on CPU).

Before the candidates, one untimed step of the eager baseline primes the process (library
initialisation, thread pools, workspaces), so that the first candidate pays no more
one-time costs than the others.

All candidates start from the same weights, in the spec's own key space, and each one's output on
the batch is compared with the oracle's, the IR interpreter on the spec's graph without passes
(archc.bench.workload says which weights and how it compares). Train mode needs a net whose
output is a class vector (cross-entropy); eval mode takes any output (a dict of `output`s is
compared output by output, flattened).

The modules: workload (the settings and what the candidates share), candidates (how each row is
built), timing (the timed steps), memory (peak memory), machine (device and versions); this one
runs the candidates and relates their figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from archc.bench.candidates import Candidates
from archc.bench.machine import device_info, versions
from archc.bench.memory import PeakMemory
from archc.bench.timing import SGD, prime
from archc.bench.workload import BenchConfig, Workload
from archc.frontend.loader import looks_like_path

# candidate names of the baselines, and what each ratio `speedup_vs_<key>` is against
BASELINE_ROWS = {"eager": "eager", "reference": "reference", "compile": "torch.compile"}
MIN_MEM_MIB = 1.0  # smaller peaks are noise (pages, allocator caches): no ratio


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _run(cfg: BenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    work = Workload(cfg)
    memory = PeakMemory(work.torch, work.cuda)
    prime(work, memory)
    memory.measurable()
    rows = []
    for name, kind, backend, fn in Candidates(work, memory, log).listing():
        row: dict[str, Any] = {"name": name, "kind": kind, "backend": backend, "status": "failed"}
        log(f"{name} ...")
        try:
            fn(row)
        except Exception as exc:  # one failing candidate (an OOM, a kernel bug) must not hide the others
            row["status"] = "failed"
            row["error"] = f"{type(exc).__name__}: {exc}".strip()
        finally:
            memory.free()
        rows.append(row)
    _relate(rows)
    return {
        "spec": os.fspath(cfg.spec) if looks_like_path(cfg.spec) else "<spec>",
        "net": work.graph.name,
        "baselines": {
            "eager": "the spec compiled with no optimisation passes (torch backend, standard nn modules)",
            "reference": work.ref.describe() if work.ref is not None else None,
            "compile": "torch.compile of eager",
        },
        "reference": work.ref.describe() if work.ref is not None else None,
        "reference_note": work.ref_note,
        "oracle": "archc.ir.Interpreter on the spec's graph without passes",
        "mode": cfg.mode,
        "batch": cfg.batch,
        "dtype": work.dtype,
        "input_shape": list(work.shape),
        "iters": cfg.iters,
        "warmup": cfg.warmup,
        "device": device_info(work.torch, work.device),
        "memory_metric": memory.metric,
        "optimizer": f"SGD(lr={SGD['lr']}, momentum={SGD['momentum']}, weight_decay={SGD['weight_decay']})"
        if cfg.mode == "train"
        else None,
        "versions": versions(work.torch, work.cuda),
        "candidates": rows,
    }


def _relate(rows: list[dict[str, Any]]) -> None:
    """Add each ok row's ratios to the baselines that ran ok (speed, memory, archc's build time)."""
    by = {r["name"]: r for r in rows if r["status"] == "ok"}
    comp = by.get("torch.compile")
    for r in rows:
        if r["status"] != "ok":
            continue
        if r["kind"] == "archc":
            r["build_vs_compile"] = r["build_first_run_vs_compile"] = None
        for key, name in BASELINE_ROWS.items():
            b = by.get(name)
            r[f"speedup_vs_{key}"] = None if b is None or b is r else _ratio(r["img_per_s"], b["img_per_s"])
            if key == "compile":  # no memory ratio against torch.compile
                continue
            r[f"mem_vs_{key}"] = None
            if b is not None and b is not r and min(r["peak_mem_mib"] or 0, b["peak_mem_mib"] or 0) >= MIN_MEM_MIB:
                r[f"mem_vs_{key}"] = _ratio(r["peak_mem_mib"], b["peak_mem_mib"])
        if r["kind"] == "archc" and comp is not None:
            r["build_vs_compile"] = _ratio(r["build_s"], comp["compile_s"])
            r["build_first_run_vs_compile"] = _ratio(r["build_first_run_s"], comp["compile_s"])


def run(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every candidate of `cfg`; see the module docstring for what is measured how.

    Args:
        cfg: what to measure.
        log: called with a line of progress before each candidate.

    Returns:
        A JSON-serialisable dict: the set-up (net, baselines, reference or None with
        reference_note saying why none matches, oracle, device, dtype, memory metric, versions)
        and one entry per candidate under "candidates", each with "status" ("ok",
        "unavailable": its backend cannot run here, or "failed") and, when ok, img_per_s,
        step_ms, peak_mem_mib, first_run_s, and the ratios speedup_vs_eager,
        speedup_vs_reference, speedup_vs_compile, mem_vs_eager, mem_vs_reference (None where
        that baseline did not run); every candidate but torch.compile also max_abs_diff,
        output_scale and output_close (max_abs_diff from the oracle within
        archc.bench.workload.OUTPUT_RTOL of the output's scale); archc entries build_s,
        build_vs_compile, build_first_run_vs_compile; torch.compile compile_s.

    Raises:
        ArchcError: a bad spec or option, or a train-mode bench of a net without a class vector output.
    """
    from archc.threads import torch_threads

    with torch_threads(cfg.threads, load_aware=False):  # a benchmark measures the machine, load recorded
        return _run(cfg, log or (lambda _line: None))
