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
batch / median step time. Peak memory is measured over the timed steps:

* GPU: torch.cuda.max_memory_allocated() minus what was allocated before the candidate
  was built (so weights, gradients, optimizer state and activations count);
* CPU (Linux): the process's peak resident set size (VmHWM, reset through
  /proc/self/clear_refs just before the timed steps) minus its resident set size before
  the candidate was built (after freeing the previous one and malloc_trim). It counts
  pages, not tensors, so it is coarser than the GPU figure; where /proc/self/clear_refs
  cannot be written it is not reported.

Before the candidates, one untimed step of the eager baseline primes the process (library
initialisation, thread pools, workspaces), so that the first candidate pays no more
one-time costs than the others.

All candidates start from the same weights, in the spec's own key space: the eager
baseline's init (archc's He init), random BN affine parameters and BN running statistics
calibrated on the benchmark batch (one train-mode forward with cumulative averaging);
archc loads them with `weights=` (folding BNs in eval mode), the reference with
load_state_dict. After timing, each candidate's output on the batch (a fresh module at the
same weights) is compared in float32 (no autocast, no TF32) with the oracle's: the IR
interpreter (archc.ir.Interpreter, reference torch.nn.functional ops, no generated code)
running the spec's graph without passes, in eval mode for eval, with batch statistics for
train. Train mode needs a net whose output is a class vector (cross-entropy); eval mode
takes any output (a dict of `output`s is compared output by output, flattened).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _pkg_version
from pathlib import Path
from typing import Any

from archc.errors import ArchcError, BackendError
from archc.frontend.loader import looks_like_path

BASELINES = ("eager", "reference", "compile")
# candidate names of the baselines, and what each ratio `speedup_vs_<key>` is against
BASELINE_ROWS = {"eager": "eager", "reference": "reference", "compile": "torch.compile"}
DTYPES = ("bf16", "fp32")
MODES = ("train", "eval")
SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
# Of the output's scale. Summation order differs between implementations (about 1e-6 in
# float32), and GPU kernels may use TF32 internally (about 1e-3); a wrong function differs by O(1).
OUTPUT_RTOL = 1e-2
MIN_MEM_MIB = 1.0  # smaller peaks are noise (pages, allocator caches): no ratio
CPU_MEMORY = "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before the build"
GPU_MEMORY = "torch.cuda.max_memory_allocated minus memory allocated before the build"


@dataclass
class BenchConfig:
    """What to measure.

    Attributes:
        spec: a `.arch` path or text.
        backends: archc backends to measure (each gives one candidate).
        baselines: any of "eager" (the spec without passes), "reference" (the hand-written
            net, where one matches the spec) and "compile" (torch.compile of eager).
        mode: "train" or "eval".
        batch: images per step.
        dtype: "bf16" (autocast) or "fp32"; None: bf16 on a GPU, fp32 on CPU.
        iters: timed steps (the median is reported).
        warmup: untimed steps after the first one.
        overrides: net parameters, like `--set`.
        device: "cuda" or "cpu"; None: cuda when available.
        compile_mode: torch.compile mode; None: "max-autotune" for eval, the default for train.
        seed: for the weights and the synthetic batch.
        threads: torch's intra-op CPU threads during the run; None: archc.threads.default_threads(load_aware=False).
    """

    spec: str | os.PathLike
    backends: tuple[str, ...] = ("torch",)
    baselines: tuple[str, ...] = ("eager", "reference")
    mode: str = "train"
    batch: int = 16
    dtype: str | None = None
    iters: int = 10
    warmup: int = 3
    overrides: Mapping[str, Any] = field(default_factory=dict)
    device: str | None = None
    compile_mode: str | None = None
    seed: int = 0
    threads: int | None = None


# --- memory ----------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so RSS falls when tensors are freed."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


# --- helpers ---------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return _pkg_version(dist)
    except PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


class _Bench:
    def __init__(self, cfg: BenchConfig, log: Callable[[str], None]) -> None:
        import torch

        from archc.api import build
        from archc.backend import available

        self.torch = torch
        self.cfg = cfg
        self.log = log
        if cfg.mode not in MODES:
            raise ArchcError(f"unknown mode '{cfg.mode}'", hint=f"modes: {', '.join(MODES)}")
        bad = [b for b in cfg.baselines if b not in BASELINES]
        if bad:
            raise ArchcError(f"unknown baseline '{bad[0]}'", hint=f"baselines: {', '.join(BASELINES)}")
        installed = available()
        for name in cfg.backends:
            if name not in installed:
                raise BackendError(
                    f"unknown backend '{name}'", hint=f"installed backends: {', '.join(sorted(installed))}"
                )
        if cfg.batch < 1 or cfg.iters < 1 or cfg.warmup < 0:
            raise ArchcError("batch and iters must be at least 1, warmup at least 0")
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.dtype = cfg.dtype or ("bf16" if self.cuda else "fp32")
        if self.dtype not in DTYPES:
            raise ArchcError(f"unknown dtype '{self.dtype}'", hint=f"dtypes: {', '.join(DTYPES)}")
        if self.cuda:
            torch.backends.cudnn.benchmark = True

        # The spec's graph (the same pipeline the archc candidates use) picks the reference.
        self.graph = build(cfg.spec, mode=cfg.mode, overrides=cfg.overrides, lower=False).graph
        self.plain = build(cfg.spec, mode=cfg.mode, overrides=cfg.overrides, passes=[], lower=False).graph
        self.ref, self.ref_note = self._find_reference()
        self.shape = tuple(self.graph.input.shape)
        g = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn((cfg.batch, *self.shape), generator=g)
        self.x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(self._classes(), (cfg.batch,), generator=g).to(self.device)
        self.state = self._weights()
        self.want = self._oracle_output()
        self._prime()
        self.memory_metric = GPU_MEMORY if self.cuda else (CPU_MEMORY if _reset_peak_rss() else None)

    # -- set-up -------------------------------------------------------------------------------
    def _find_reference(self) -> tuple[Any, str | None]:
        """The hand-written net matching the spec, or None and why not."""
        if "reference" not in self.cfg.baselines:
            return None, None
        from archc.bench.reference import reference_for

        try:
            return reference_for(self.graph), None
        except ArchcError as err:
            return None, err.message

    def _classes(self) -> int:
        """The class count of the cross-entropy labels (train mode needs a class vector)."""
        out = self.graph.output.shape
        if self.cfg.mode == "train" and (len(out) != 1 or len(self.graph.outputs) != 1):
            n = len(self.graph.outputs)
            what = f"it has {n} outputs" if n != 1 else f"its output is {'x'.join(map(str, out))}"
            raise ArchcError(
                f"archc bench trains '{self.graph.name}' with cross-entropy on a class vector, but {what}",
                hint="bench it with --mode eval, or end the net with `flatten` and a `linear` classifier",
            )
        return out[0] if len(out) == 1 else 1

    def _weights(self) -> dict[str, Any]:
        """The eager baseline's init, random BN affine, BN statistics calibrated on the batch."""
        torch = self.torch
        model = self._eager_model(self.cfg.seed)
        g = torch.Generator().manual_seed(self.cfg.seed + 1)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.affine]
        momenta = [m.momentum for m in bns]
        with torch.no_grad():
            for m in bns:
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.momentum = None  # cumulative average: after one forward, the batch's statistics
            model.train()
            with self._exact():
                model(self.x)
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _eager_model(self, seed: int | None = None) -> Any:
        """The eager baseline: the spec without passes, as standard nn modules, channels_last."""
        from archc.api import build

        if seed is not None:
            self.torch.manual_seed(seed)
        b = build(self.cfg.spec, mode=self.cfg.mode, overrides=self.cfg.overrides, passes=[])
        if seed is None:
            b.module.load_state_dict(self.state)
        return b.module.to(self.device, memory_format=self.torch.channels_last)

    def _reference_model(self) -> Any:
        torch = self.torch
        model = self.ref.make().to(self.device, memory_format=torch.channels_last)
        model.load_state_dict(self.state)  # copies into the channels_last parameters
        return model

    def _flat(self, out: Any) -> Any:
        """One float32 (N, K) tensor of an output: a dict of outputs is flattened and joined in order."""
        if isinstance(out, dict):
            return self.torch.cat([v.float().flatten(1) for v in out.values()], 1)
        return out.float().flatten(1)

    def _oracle_output(self) -> Any:
        """The IR interpreter's output on the spec's graph without passes (see the module docstring)."""
        from archc.ir import Interpreter

        with self.torch.no_grad(), self._exact():
            out = Interpreter(self.plain, self.state).run(self.x, train=self.cfg.mode == "train")
        return self._flat(out)

    def _check(self, row: dict[str, Any], model: Any) -> None:
        """Fill the row's output comparison with the oracle: max_abs_diff, output_scale, output_close."""
        with self.torch.no_grad(), self._exact():
            got = self._flat(model.train(self.cfg.mode == "train")(self.x))
        row["max_abs_diff"] = (got - self.want).abs().max().item()
        row["output_scale"] = self.want.abs().max().item()
        row["output_close"] = row["max_abs_diff"] <= OUTPUT_RTOL * max(1.0, row["output_scale"])

    @contextlib.contextmanager
    def _exact(self) -> Iterator[None]:
        """float32 without TF32, for comparing outputs."""
        torch = self.torch
        if not self.cuda:
            yield
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    def _autocast(self) -> Any:
        if self.dtype == "bf16":
            return self.torch.autocast(device_type=self.device.type, dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def _free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
        else:
            _malloc_trim()

    def _prime(self) -> None:
        """One untimed step of the eager baseline, so that no candidate pays the process's one-time
        costs (library initialisation, thread pools, workspaces) in its time or memory."""
        model = self._eager_model().train(self.cfg.mode == "train")
        self._step(model, model.parameters())()
        self._sync()
        del model
        self._free()

    def _memory_base(self) -> int | None:
        self._free()
        if self.cuda:
            return self.torch.cuda.memory_allocated()
        kib = _status_kib("VmRSS")
        return None if kib is None else kib * 1024

    def _memory_reset(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
        else:
            _reset_peak_rss()

    def _memory_peak(self, base: int | None) -> float | None:
        """MiB above `base`."""
        if base is None or self.memory_metric is None:
            return None
        if self.cuda:
            peak = self.torch.cuda.max_memory_allocated()
        else:
            kib = _status_kib("VmHWM")
            if kib is None:
                return None
            peak = kib * 1024
        return max(0, peak - base) / 2**20

    # -- one step -----------------------------------------------------------------------------
    def _step(self, model: Any, params: Any) -> Callable[[], None]:
        torch = self.torch
        x, y = self.x, self.y
        if self.cfg.mode == "train":
            opt = torch.optim.SGD(params, **SGD)

            def train_step() -> None:
                with self._autocast():
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            return train_step

        def eval_step() -> None:
            with torch.inference_mode(), self._autocast():
                model(x)

        return eval_step

    def _time(self, step: Callable[[], None], row: dict[str, Any], base: int | None) -> None:
        """First step (timed alone), warm-up, timed steps; fills the row."""
        t = time.perf_counter()
        step()
        self._sync()
        row["first_run_s"] = time.perf_counter() - t
        for _ in range(self.cfg.warmup):
            step()
        self._sync()
        self._memory_reset()
        times = []
        for _ in range(self.cfg.iters):
            t = time.perf_counter()
            step()
            self._sync()
            times.append(time.perf_counter() - t)
        row["peak_mem_mib"] = self._memory_peak(base)
        median = statistics.median(times)
        row["step_ms"] = {"median": median * 1e3, "min": min(times) * 1e3, "max": max(times) * 1e3}
        row["img_per_s"] = self.cfg.batch / median
        row["status"] = "ok"

    # -- candidates ---------------------------------------------------------------------------
    def eager(self, row: dict[str, Any]) -> None:
        self._baseline(row, self._eager_model)

    def reference(self, row: dict[str, Any]) -> None:
        self._baseline(row, self._reference_model)

    def _baseline(self, row: dict[str, Any], make: Callable[[], Any]) -> None:
        base = self._memory_base()
        model = make().train(self.cfg.mode == "train")
        self._time(self._step(model, model.parameters()), row, base)
        del model  # the timed steps changed the weights: check a fresh one
        self._free()
        self._check(row, make())

    def compiled(self, row: dict[str, Any]) -> None:
        import torch._dynamo
        import torch._inductor.config as inductor_config

        mode = self.cfg.compile_mode or ("max-autotune" if self.cfg.mode == "eval" else "default")
        row["compile_mode"] = mode
        base = self._memory_base()
        model = self._eager_model().train(self.cfg.mode == "train")
        torch._dynamo.reset()
        # A cold compile: no FX-graph, AOT-autograd or autotuning results from earlier runs.
        with inductor_config.patch(force_disable_caches=True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*force disabled by .*force_disable_caches")
            compiled = torch.compile(model, mode=None if mode == "default" else mode)
            self._time(self._step(compiled, model.parameters()), row, base)
        row["compile_s"] = row["first_run_s"]

    def archc(self, row: dict[str, Any], backend: str) -> None:
        from archc.api import build, load_weights
        from archc.bench.dispatch import KERNEL, dispatch_counts, fallbacks

        base = self._memory_base()
        try:
            t = time.perf_counter()
            b = build(self.cfg.spec, backend=backend, mode=self.cfg.mode, overrides=self.cfg.overrides)
            row["build_s"] = time.perf_counter() - t
        except BackendError as err:
            row["status"] = "unavailable"
            row["error"] = err.message + (f" (hint: {err.hint})" if err.hint else "")
            return
        row["build_ms"] = {k: round(v, 3) for k, v in b.timings_ms.items()}
        model = self._prepare(b, load_weights)
        self._time(self._step(model, model.parameters()), row, base)
        counts = dispatch_counts(model)  # kernel calls and torch fallbacks, where the backend counts them
        if counts:
            row["dispatch"], row["fallbacks"] = counts, fallbacks(counts)
            kernels, falls = counts.get(KERNEL, 0), row["fallbacks"]
            self.log(f"{row['name']}: {kernels} kernel calls, {falls} torch fallbacks {counts}")
        row["build_first_run_s"] = row["build_s"] + row["first_run_s"]
        if self.cfg.mode == "train":  # the timed steps changed the weights: check a fresh module
            del model
            self._free()
            model = self._prepare(
                build(self.cfg.spec, backend=backend, mode="train", overrides=self.cfg.overrides), load_weights
            )
        self._check(row, model)

    def _prepare(self, b: Any, load_weights: Callable[..., None]) -> Any:
        load_weights(b.module, self.state, b.graph)
        model = b.module.to(self.device)
        return model.train(self.cfg.mode == "train")

    # -- all ----------------------------------------------------------------------------------
    def candidates(self) -> list[tuple[str, str, str | None, Callable[[dict[str, Any]], None]]]:
        out: list[tuple[str, str, str | None, Callable[[dict[str, Any]], None]]] = []
        if "eager" in self.cfg.baselines:
            out.append(("eager", "baseline", None, self.eager))
        if self.ref is not None:
            out.append(("reference", "baseline", None, self.reference))
        for name in self.cfg.backends:
            out.append((f"archc[{name}]", "archc", name, lambda row, n=name: self.archc(row, n)))
        if "compile" in self.cfg.baselines:
            out.append(("torch.compile", "baseline", None, self.compiled))
        return out

    def run(self) -> dict[str, Any]:
        rows = []
        for name, kind, backend, fn in self.candidates():
            row: dict[str, Any] = {"name": name, "kind": kind, "backend": backend, "status": "failed"}
            self.log(f"{name} ...")
            try:
                fn(row)
            except Exception as exc:  # one failing candidate (an OOM, a kernel bug) must not hide the others
                row["status"] = "failed"
                row["error"] = f"{type(exc).__name__}: {exc}".strip()
            finally:
                self._free()
            rows.append(row)
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
        return {
            "spec": os.fspath(self.cfg.spec) if looks_like_path(self.cfg.spec) else "<spec>",
            "net": self.graph.name,
            "baselines": {
                "eager": "the spec compiled with no optimisation passes (torch backend, standard nn modules)",
                "reference": self.ref.describe() if self.ref is not None else None,
                "compile": "torch.compile of eager",
            },
            "reference": self.ref.describe() if self.ref is not None else None,
            "reference_note": self.ref_note,
            "oracle": "archc.ir.Interpreter on the spec's graph without passes",
            "mode": self.cfg.mode,
            "batch": self.cfg.batch,
            "dtype": self.dtype,
            "input_shape": list(self.shape),
            "iters": self.cfg.iters,
            "warmup": self.cfg.warmup,
            "device": self._device_info(),
            "memory_metric": self.memory_metric,
            "optimizer": f"SGD(lr={SGD['lr']}, momentum={SGD['momentum']}, weight_decay={SGD['weight_decay']})"
            if self.cfg.mode == "train"
            else None,
            "versions": self._versions(),
            "candidates": rows,
        }

    def _device_info(self) -> dict[str, Any]:
        torch = self.torch
        if self.cuda:
            return {"type": "cuda", "name": torch.cuda.get_device_name(self.device)}
        return {"type": "cpu", "name": _cpu_name(), "threads": torch.get_num_threads()}

    def _versions(self) -> dict[str, Any]:
        torch = self.torch
        return {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "triton": _version("triton"),
            "archc": _version("archc"),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if self.cuda else None,
            "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        }


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
        output_scale and output_close (max_abs_diff from the oracle within OUTPUT_RTOL of the
        output's scale); archc entries build_s, build_vs_compile, build_first_run_vs_compile;
        torch.compile compile_s.

    Raises:
        ArchcError: a bad spec or option, or a train-mode bench of a net without a class vector output.
    """
    from archc.threads import torch_threads

    with torch_threads(cfg.threads, load_aware=False):  # a benchmark measures the machine, load recorded
        return _Bench(cfg, log or (lambda _line: None)).run()
