"""How each row of a bench is built: eager, reference, archc[backend] and torch.compile, from the same weights.

Every candidate is built after a memory base is taken, timed by archc.bench.timing, and (but
torch.compile) compared with the oracle on a fresh module at the starting weights: a train
step changes the weights. archc loads the weights with `weights=` (folding BNs in eval mode),
the reference with load_state_dict.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

from archc.bench.memory import PeakMemory
from archc.bench.timing import make_step, time_steps
from archc.bench.workload import Workload
from archc.errors import BackendError

Fill = Callable[[dict[str, Any]], None]


class Candidates:
    """The candidates a bench asked for, each a function that fills its row.

    Args:
        work: what every candidate shares.
        memory: the peak-memory probe.
        log: called with a line about an archc candidate's kernel calls and torch fallbacks.
    """

    def __init__(self, work: Workload, memory: PeakMemory, log: Callable[[str], None]) -> None:
        self.work = work
        self.cfg = work.cfg
        self.memory = memory
        self.log = log

    def listing(self) -> list[tuple[str, str, str | None, Fill]]:
        """(name, kind, backend, fill) per candidate, in the order they run."""
        out: list[tuple[str, str, str | None, Fill]] = []
        if "eager" in self.cfg.baselines:
            out.append(("eager", "baseline", None, self.eager))
        if self.work.ref is not None:
            out.append(("reference", "baseline", None, self.reference))
        for name in self.cfg.backends:
            out.append((f"archc[{name}]", "archc", name, lambda row, n=name: self.archc(row, n)))
        if "compile" in self.cfg.baselines:
            out.append(("torch.compile", "baseline", None, self.compiled))
        return out

    def eager(self, row: dict[str, Any]) -> None:
        """The spec without passes, as standard nn modules."""
        self._baseline(row, self.work.eager_model)

    def reference(self, row: dict[str, Any]) -> None:
        """The hand-written net that matches the spec."""
        self._baseline(row, self.work.reference_model)

    def _baseline(self, row: dict[str, Any], make: Callable[[], Any]) -> None:
        base = self.memory.base()
        model = make().train(self.cfg.mode == "train")
        time_steps(self.work, self.memory, make_step(self.work, model, model.parameters()), row, base)
        del model  # the timed steps changed the weights: check a fresh one
        self.memory.free()
        self.work.check(row, make())

    def compiled(self, row: dict[str, Any]) -> None:
        """torch.compile of the eager baseline, compiled cold; its first run is its compile time."""
        import torch._dynamo
        import torch._inductor.config as inductor_config

        mode = self.cfg.compile_mode or ("max-autotune" if self.cfg.mode == "eval" else "default")
        row["compile_mode"] = mode
        base = self.memory.base()
        model = self.work.eager_model().train(self.cfg.mode == "train")
        torch._dynamo.reset()
        # A cold compile: no FX-graph, AOT-autograd or autotuning results from earlier runs.
        with inductor_config.patch(force_disable_caches=True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*force disabled by .*force_disable_caches")
            compiled = torch.compile(model, mode=None if mode == "default" else mode)
            time_steps(self.work, self.memory, make_step(self.work, compiled, model.parameters()), row, base)
        row["compile_s"] = row["first_run_s"]

    def archc(self, row: dict[str, Any], backend: str) -> None:
        """The spec through its pass pipeline and `backend`; "unavailable" where the backend cannot run here."""
        from archc.api import build, load_weights
        from archc.bench.dispatch import KERNEL, dispatch_counts, fallbacks

        base = self.memory.base()
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
        time_steps(self.work, self.memory, make_step(self.work, model, model.parameters()), row, base)
        counts = dispatch_counts(model)  # kernel calls and torch fallbacks, where the backend counts them
        if counts:
            row["dispatch"], row["fallbacks"] = counts, fallbacks(counts)
            kernels, falls = counts.get(KERNEL, 0), row["fallbacks"]
            self.log(f"{row['name']}: {kernels} kernel calls, {falls} torch fallbacks {counts}")
        row["build_first_run_s"] = row["build_s"] + row["first_run_s"]
        if self.cfg.mode == "train":  # the timed steps changed the weights: check a fresh module
            del model
            self.memory.free()
            model = self._prepare(
                build(self.cfg.spec, backend=backend, mode="train", overrides=self.cfg.overrides), load_weights
            )
        self.work.check(row, model)

    def _prepare(self, b: Any, load_weights: Callable[..., None]) -> Any:
        load_weights(b.module, self.work.state, b.graph)
        model = b.module.to(self.work.device)
        return model.train(self.cfg.mode == "train")
