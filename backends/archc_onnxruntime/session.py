"""OrtModule: an EngineModule (archc.engine_module) whose engine is an onnxruntime InferenceSession.

The base class holds the torch backend's layers and exports them to ONNX on the first call and
after any change of weights; here the export becomes an InferenceSession (one per intra-op
thread count forward() needs).

A batch that `split_parts` splits (at least `threads` samples, each slice worth
`MIN_SLICE_MACS`) runs as `threads` slices at once, one per Python thread, through a session
with one intra-op thread (`split_batch`): each thread then runs whole layers without waiting
for the others after every op. On ResNet-50 at batch 8 on a shared 2-core machine that
measured 1.05x and 1.09x one session with two intra-op threads (medians of paired rounds;
0.99x in a third run: BENCHMARKS.md, issue 13). Other batches use the multi-thread session.
onnxruntime releases the GIL while it runs, and a session may run concurrently.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from archc.engine_module import EngineModule
from archc.errors import BackendError

OPTIMIZATION = ("disable", "basic", "extended", "layout", "all")
DEFAULTS: dict[str, Any] = {
    "threads": None,
    "inter_threads": None,
    "optimization": "all",
    "spinning": True,
    "stop_spinning": False,
    "split_batch": True,
    "exporter": "dynamo",
    "opset": None,
    "providers": ("CPUExecutionProvider",),
    "session_options": None,
}


def _level(name: str) -> Any:
    import onnxruntime as ort

    levels = ort.GraphOptimizationLevel
    return {
        "disable": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        # onnxruntime >= 1.22 has a level between extended and all (layout transforms); older ones do not
        "layout": getattr(levels, "ORT_ENABLE_LAYOUT", levels.ORT_ENABLE_EXTENDED),
        "all": levels.ORT_ENABLE_ALL,
    }[name]


class OrtModule(EngineModule):
    """An eval-graph network run by onnxruntime: torch tensors in and out, any batch size.

    Args:
        net: the torch backend's eager-ops module for `graph` (its layers become this module's).
        graph: the eval graph.
        options: session options (see `configure`).
    """

    engine = "onnxruntime"
    TRANSIENT = {
        "_sessions": {},  # intra-op threads -> InferenceSession, for the weights of _stamp
        "_model": None,  # the exported file's bytes, while a session may still be built from them
        "_stamp": None,
        "_pool": None,  # (workers, ThreadPoolExecutor) for split batches
    }

    DEFAULTS = DEFAULTS
    COUNTS = ("threads", "inter_threads")
    HIDDEN = ("session_options",)

    @classmethod
    def _check_values(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        if cfg["optimization"] not in OPTIMIZATION:
            raise BackendError(
                f"onnxruntime option optimization={cfg['optimization']!r} is not a level",
                hint=f"levels: {', '.join(OPTIMIZATION)}",
            )
        if isinstance(cfg["providers"], str):
            cfg["providers"] = (cfg["providers"],)
        cfg["providers"] = tuple(cfg["providers"])
        cfg["spinning"] = bool(cfg["spinning"])
        cfg["stop_spinning"] = bool(cfg["stop_spinning"])
        return cfg

    def configure(self, **options: Any) -> None:
        """Change session options; the session is rebuilt on the next call.

        Args:
            threads: onnxruntime's intra-op threads (default: torch.get_num_threads() when the session is built).
            inter_threads: inter-op threads (default: onnxruntime's).
            optimization: graph optimisation level: disable, basic, extended, layout or all (default).
            spinning: let idle intra-op threads spin rather than sleep (default True, as onnxruntime's).
            stop_spinning: stop the spinning threads as soon as a run returns (session.force_spinning_stop), so
                they take no CPU from what the caller does between runs; each run then wakes them again,
                which costs milliseconds (default False).
            split_batch: run a batch of at least `threads` samples as `threads` slices at once, each through a
                one-thread session (default True; CPU provider only).
            exporter: "dynamo" (default) or "legacy", as `archc export --onnx-exporter`.
            opset: the ONNX opset (default: the exporter's).
            providers: onnxruntime execution providers (default: CPUExecutionProvider).
            session_options: an `onnxruntime.SessionOptions` to start from; the options above override it.

        Raises:
            BackendError: an unknown option or a bad value.
        """
        super().configure(**options)

    def _drop_engines(self) -> None:
        # the thread pool for split batches stays: it holds no weights
        self.__dict__.update({k: v for k, v in self._transient().items() if k != "_pool"})

    def session_options(self, threads: int | None = None) -> Any:
        """The `onnxruntime.SessionOptions` the session with `threads` intra-op threads (default: threads()) uses."""
        import onnxruntime as ort

        cfg = self.options
        so = cfg["session_options"] or ort.SessionOptions()
        so.graph_optimization_level = _level(cfg["optimization"])
        so.intra_op_num_threads = threads or self.threads()
        if cfg["inter_threads"]:
            so.inter_op_num_threads = cfg["inter_threads"]
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg["spinning"] else "0")
        so.add_session_config_entry("session.force_spinning_stop", "1" if cfg["stop_spinning"] else "0")
        return so

    def session(self, threads: int | None = None) -> Any:
        """The InferenceSession with `threads` intra-op threads (default: threads()), built when needed.

        A change of weights (or a configure()) exports the network again and drops the old sessions. The
        exported file's bytes are kept until both sessions forward() uses (one thread, threads()) exist; a
        session for another thread count after that exports again.
        """
        import onnxruntime as ort

        threads = threads or self.threads()
        stamp = self._fingerprint()
        sessions = self.__dict__["_sessions"]
        if stamp != self.__dict__["_stamp"] or (threads not in sessions and self.__dict__["_model"] is None):
            if stamp != self.__dict__["_stamp"]:
                self._drop_engines()  # free the old ones first: each holds a copy of the weights
                sessions = self.__dict__["_sessions"]
            self.__dict__["_model"] = self.exported_bytes()
            self.__dict__["_stamp"] = stamp
        if threads not in sessions:
            try:
                sessions[threads] = ort.InferenceSession(
                    self.__dict__["_model"], self.session_options(threads), providers=list(self.options["providers"])
                )
            except Exception as exc:  # onnxruntime's own errors (a bad provider, an unsupported op)
                raise BackendError(f"onnxruntime could not load the exported network: {exc}") from exc
            if {1, self.threads()} <= set(sessions):  # both kinds forward() uses exist
                self.__dict__["_model"] = None
        return sessions[threads]

    def _cpu_only(self) -> bool:
        return self.options["providers"] == ("CPUExecutionProvider",)

    def _run_split(self, arr: np.ndarray, parts: int) -> list[np.ndarray]:
        sess = self.session(1)
        pool = self.__dict__["_pool"]
        if pool is None or pool[0] != parts - 1:
            if pool is not None:
                pool[1].shutdown(wait=False)
            pool = self.__dict__["_pool"] = (parts - 1, ThreadPoolExecutor(parts - 1, thread_name_prefix="archc-ort"))
        first, *rest = np.array_split(arr, parts)  # the caller's thread runs the first slice
        futures = [pool[1].submit(sess.run, self.outputs, {"input": a}) for a in rest]
        done = [sess.run(self.outputs, {"input": first}), *(f.result() for f in futures)]
        return [np.concatenate(outs) for outs in zip(*done, strict=True)]

    def forward(self, x: torch.Tensor) -> Any:
        """Run the session on `x` (N x input shape); outputs as the torch backend returns them, on x's device."""
        arr = self.input_array(x)
        parts = self.split_parts(arr.shape[0])
        outs = self._run_split(arr, parts) if parts > 1 else self.session().run(self.outputs, {"input": arr})
        return self.pack_outputs(outs, x)
