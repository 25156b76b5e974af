"""One GPU check of issue 12 that fits one device call: correctness first, then speed and memory.

Phases, in this order; every measurement appends one JSON line to OUT/results.jsonl the
moment it is done (flushed), so a run cut short still leaves everything before the cut.
A measurement whose time estimate no longer fits the remaining budget is recorded as
"skipped" instead of being started.

1. env: Python, torch, triton, CUDA, cuDNN, the GPU, where lark and networkx came from,
   which archc backends are registered.
2. kernels: every Triton-backed op against float64 torch on the same device
   (gpu_check_kernels.py): FusedConv (1x1 GEMM, epilogue after cuDNN), BNAct (train and
   eval, with and without residual, running statistics), the BN-act-conv unit; float32
   and bfloat16, forward and backward; odd and ResNet-50-sized shapes; then every other
   activation of the kernels through all four at the odd float32 shapes.
3. resnet: a ResNet-50 train step (loss, logits, every gradient, running statistics) and
   an eval pass of the triton and torch backends against a float64 run of the same
   weights, in float32 and bf16 autocast. A backend passes when its error is at most twice
   the torch backend's at the same precision plus 1e-3 (the torch backend is plain cuDNN:
   its error is what the precision costs; ten times in Triton's CPU interpreter, which
   truncates float32 to bf16), and the triton eval took no fallback.
4. throughput: ResNet-50, batch 256, bf16 autocast, channels_last, train step (SGD) and
   eval pass: eager reference, archc[torch], archc[triton], then torch.compile (default
   mode, cold: caches off) with its compile time. CUDA-event timing of each step after
   warm-up, median; peak memory = torch.cuda.max_memory_allocated over the timed steps
   minus what was allocated before the model was built.

--smoke runs the same code at toy sizes (CIFAR ResNet-20 at 8x8, batch 2, the smallest
kernel cases, no torch.compile), on the CPU through Triton's interpreter when no GPU is
present: the CI test of this script. Exit status 0 when nothing failed or errored.

On the device machine archc may not be pip-installed (no network): run it with the
repository on PYTHONPATH; `ensure_backends` then registers the two in-tree backends through
a throw-away dist-info folder (entry points are how archc finds backends), for this
process only. The exact device command is in docs/gpu-check.md.

Usage:
    python benchmarks/gpu_check.py [--out DIR] [--budget-s 420] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def ensure_backends(root: Path = ROOT) -> list[str]:
    """Register archc's in-tree backends as entry points when archc is not installed; their names.

    Writes a minimal `*.dist-info` (METADATA, entry_points.txt) into a temporary folder and
    puts it on sys.path, which is where importlib.metadata looks. Does nothing when the
    group already has the backends.
    """
    for p in (root, root / "backends"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    from importlib.metadata import entry_points

    have = {ep.name for ep in entry_points(group="archc.backends")}
    if {"torch", "triton"} <= have:
        return sorted(have)
    site = Path(tempfile.mkdtemp(prefix="archc_gpu_check_"))
    dist = site / "archc_gpu_check-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: archc-gpu-check\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        "[archc.backends]\ntorch = archc_torch:TorchBackend\ntriton = archc_triton:TritonBackend\n"
    )
    sys.path.insert(0, str(site))
    return sorted({ep.name for ep in entry_points(group="archc.backends")})


class Run:
    """The budget clock and the JSON-lines record."""

    def __init__(self, out: Path, budget_s: float, smoke: bool) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "results.jsonl"
        self.file = self.path.open("a", encoding="utf-8")
        self.deadline = time.monotonic() + budget_s
        self.smoke = smoke
        self.bad = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def write(self, phase: str, name: str, row: dict[str, Any]) -> None:
        row = {"phase": phase, "name": name, **row, "t_left_s": round(self.remaining(), 1)}
        self.file.write(json.dumps(row, default=str) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        status = row.get("status", "ok")
        self.bad += status in ("fail", "error")
        extra = row.get("errors") or row.get("summary") or row.get("reason") or row.get("error") or ""
        print(f"[{phase}] {name}: {status} {extra}", flush=True)

    def step(self, phase: str, name: str, estimate_s: float, fn: Callable[[], dict[str, Any]]) -> None:
        """Run fn unless its estimate exceeds what is left; record its result, or why not."""
        if estimate_s > self.remaining():
            self.write(
                phase,
                name,
                {"status": "skipped", "reason": f"needs ~{estimate_s:.0f} s, {self.remaining():.0f} s left"},
            )
            return
        t = time.monotonic()
        try:
            row = fn()
        except Exception as exc:  # one broken check must not hide the rest
            row = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        row.setdefault("status", "ok")
        row["wall_s"] = round(time.monotonic() - t, 2)
        self.write(phase, name, row)


def env(device: Any, backends: list[str]) -> dict[str, Any]:
    """Versions, device and where the carried packages were imported from."""
    import torch

    row: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "backends": backends,
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
    }
    for mod in ("triton", "lark", "networkx", "archc"):
        try:
            m = __import__(mod)
            row[mod] = f"{getattr(m, '__version__', '?')} from {Path(m.__file__).parent}"
        except ImportError as exc:
            row[mod] = f"missing: {exc}"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        row.update(gpu=p.name, sms=p.multi_processor_count, gib=round(p.total_memory / 2**30, 1))
        row["cudnn"] = torch.backends.cudnn.version()
        row["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return row


# --- phase 3: whole nets against float64 ------------------------------------------------------
def _net_sizes(smoke: bool) -> tuple[str, dict[str, str], int]:
    if smoke:
        return "specs/cifar/resnet20.arch", {"input_size": "3x8x8"}, 2
    return "specs/resnet50.arch", {}, 16


def _errs(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Relative error over the concatenation of matching tensors (all gradients as one vector)."""
    num = sum(((a[k].double() - b[k].double()) ** 2).sum() for k in b)
    den = sum((b[k].double() ** 2).sum() for k in b)
    err = (num / den).sqrt().item() if den > 0 else 0.0
    return float("inf") if math.isnan(err) else err  # NaN never passes


def resnet(device: Any, smoke: bool, mode: str) -> dict[str, Any]:
    """Train step or eval pass of both backends, float32 and bf16, against float64."""
    import torch

    import archc
    from archc.bench.dispatch import dispatch_counts, fallbacks
    from archc.bench.reference import randomise

    spec, ov, batch = _net_sizes(smoke)
    ref = archc.compile(spec, backend="torch", mode="train", overrides=ov)
    randomise(ref, seed=3)
    state = ref.state_dict()
    x = torch.randn(batch, 3, *(8, 8) if smoke else (224, 224), generator=torch.Generator().manual_seed(4))
    y = torch.randint(10, (batch,), generator=torch.Generator().manual_seed(5))
    x, y = x.to(device), y.to(device)
    ref64 = archc.compile(spec, backend="torch", mode=mode, overrides=ov, weights=state).double().to(device)
    ref64.train(mode == "train")

    def run(model: Any, dtype: torch.dtype | None) -> dict[str, Any]:
        xin = x.double() if dtype is None else x
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            if mode == "eval":
                with torch.inference_mode():
                    return {"logits": model(xin).float().clone()}
            logits = model(xin)
            loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        out = {"logits": logits.detach(), "grads": {n: p.grad for n, p in model.named_parameters()}}
        out["stats"] = {k: v for k, v in model.state_dict().items() if "running" in k}
        return out

    want = run(ref64, None)
    result: dict[str, Any] = {}
    for dt_name, dt in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        for backend in ("torch", "triton"):
            m = archc.compile(spec, backend=backend, mode=mode, overrides=ov, weights=state).to(device)
            m.train(mode == "train")
            got = run(m, dt)
            e = {"logits": _errs({"l": got["logits"]}, {"l": want["logits"]})}
            if mode == "train":
                e["grads"] = _errs(got["grads"], want["grads"])
                e["running_stats"] = _errs(got["stats"], want["stats"])
            counts = dispatch_counts(m)
            result[f"{backend} {dt_name}"] = {"errors": e, "dispatch": counts, "fallbacks": fallbacks(counts)}
    status = "pass"
    # Triton's CPU interpreter converts float32 to bf16 by truncation (a GPU rounds to nearest): more slack
    slack = 2 if device.type == "cuda" else 10
    for dt_name in ("float32", "bf16"):
        base, tri = result[f"torch {dt_name}"], result[f"triton {dt_name}"]
        for k, v in tri["errors"].items():
            if not v <= slack * base["errors"][k] + 1e-3:
                status = "fail"
        if mode == "eval" and tri["fallbacks"]:
            status = "fail"
    summary = {k: {e: f"{v:.1e}" for e, v in r["errors"].items()} for k, r in result.items()}
    return {"status": status, "results": result, "summary": summary}


# --- phase 4: throughput and memory ------------------------------------------------------------
def throughput(device: Any, smoke: bool, mode: str, candidate: str) -> dict[str, Any]:
    """img/s (CUDA events, median) and peak memory of one candidate at batch 256 bf16."""
    import torch

    import archc
    from archc.api import build
    from archc.bench.dispatch import dispatch_counts, fallbacks
    from archc.bench.reference import reference_for

    spec, ov, _ = _net_sizes(smoke)
    batch, warmup, iters = (2, 0, 1) if smoke else (256, 5, 20)
    size = (8, 8) if smoke else (224, 224)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
    x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (batch,), device=device)
    if candidate in ("eager", "torch.compile"):
        model = reference_for(build(spec, mode=mode, overrides=ov, lower=False).graph).make()
        model = model.to(device, memory_format=torch.channels_last)
    else:
        model = archc.compile(spec, backend=candidate[6:-1], mode=mode, overrides=ov).to(device)
    model.train(mode == "train")
    fn = model
    if candidate == "torch.compile":
        import torch._dynamo
        import torch._inductor.config as inductor_config

        torch._dynamo.reset()
        inductor_config.force_disable_caches = True  # a cold compile
        fn = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        if mode == "eval":
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                fn(x)
            return
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(fn(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    row: dict[str, Any] = {"first_step_s": round(time.perf_counter() - t, 2), "spec": spec, "batch": batch}
    for _ in range(warmup):
        step()
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        row["peak_mib"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
    else:
        for _ in range(iters):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    row.update(step_ms=round(med * 1e3, 2), img_per_s=round(batch / med, 1), iters=iters, warmup=warmup)
    counts = dispatch_counts(model)
    if counts:
        row.update(dispatch=counts, fallbacks=fallbacks(counts))
        if mode == "eval" and fallbacks(counts):
            row["status"] = "fail"
    row["summary"] = f"{row['img_per_s']} img/s, peak {row.get('peak_mib')} MiB, first step {row['first_step_s']} s"
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="folder for results.jsonl")
    p.add_argument("--budget-s", type=float, default=420.0, help="seconds this script may use")
    p.add_argument("--smoke", action="store_true", help="toy sizes; on CPU through TRITON_INTERPRET=1")
    args = p.parse_args(argv)
    backends = ensure_backends()
    import torch

    run = Run(Path(args.out), args.budget_s, args.smoke)
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif os.environ.get("TRITON_INTERPRET") == "1" and args.smoke:
        device = torch.device("cpu")
    else:
        run.write(
            "env", "device", {"status": "error", "error": "no CUDA GPU (and not --smoke under TRITON_INTERPRET=1)"}
        )
        return 1
    os.chdir(ROOT)  # the specs are addressed relative to the repository
    run.step("env", "versions", 1, lambda: env(device, backends))

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check_kernels

    scale = 0.2 if device.type == "cpu" else 1.0  # the interpreter's toy cases are cheap; a GPU compiles
    for name, est, fn in gpu_check_kernels.checks(args.smoke, device):
        run.step("kernels", name, est * scale, fn)
    for mode, est in (("train", 60), ("eval", 30)):
        run.step("resnet", f"ResNet {mode} vs float64", est * scale, lambda m=mode: resnet(device, args.smoke, m))
    estimates = {"eager": 25, "archc[torch]": 25, "archc[triton]": 40, "torch.compile": 150}
    for mode in ("train", "eval"):
        for cand in ("eager", "archc[torch]", "archc[triton]"):
            run.step(
                "throughput",
                f"{cand} {mode}",
                estimates[cand] * scale,
                lambda c=cand, m=mode: throughput(device, args.smoke, m, c),
            )
    for mode in ("train", "eval"):
        if args.smoke:  # a cold inductor compile on a CPU takes minutes: not a smoke test
            run.write("throughput", f"torch.compile {mode}", {"status": "skipped", "reason": "--smoke"})
            continue
        est = estimates["torch.compile"] * (1 if mode == "train" else 0.6)
        run.step(
            "throughput",
            f"torch.compile {mode}",
            est,
            lambda m=mode: throughput(device, args.smoke, m, "torch.compile"),
        )
    print(f"gpu_check: {run.bad} failed or errored; results in {run.path}", flush=True)
    return 1 if run.bad else 0


if __name__ == "__main__":
    sys.exit(main())
