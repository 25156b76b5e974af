"""OrtModule: the torch backend's parameters in an nn.Module whose forward runs an onnxruntime session.

The module holds the eval graph's layers as the torch backend builds them in eager ops
(`TorchBackend.exportable`), so its state_dict keys are the torch backend's and archc loads
weights into it as into any backend's module. On the first call, and again after any
parameter or buffer changed (a `load_state_dict`, an in-place edit: each tensor's version
counter moves), it exports those layers to ONNX with archc's exporter (`archc.onnx_export`,
the one `archc export` uses) and builds an InferenceSession from the file.

A batch of at least `threads` samples is split into `threads` slices run at once, one per
Python thread, through a session with one intra-op thread (`split_batch`): each thread
then runs whole layers without waiting for the others after every op. On ResNet-50 at
batch 8 on a shared 2-core machine that measured 1.05x and 1.09x one session with two
intra-op threads (medians of paired rounds; 0.99x in a third run: BENCHMARKS.md, issue 13).
Smaller batches use the multi-thread session. onnxruntime releases the GIL while it runs,
and a session may run concurrently.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archc.errors import BackendError
from archc.ir import Graph
from archc.onnx_export import EXPORTERS, export_onnx, output_names

OPTIMIZATION = ("disable", "basic", "extended", "layout", "all")
DEFAULTS: dict[str, Any] = {
    "threads": None,
    "inter_threads": None,
    "optimization": "all",
    "spinning": False,
    "split_batch": True,
    "exporter": "dynamo",
    "opset": None,
    "providers": ("CPUExecutionProvider",),
    "session_options": None,
}
EXAMPLE_BATCH = 2  # not 1: torch.export specialises a dimension whose example size is 1


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


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate session options against DEFAULTS; return the full set.

    Raises:
        BackendError: an unknown option or a bad value.
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise BackendError(
            f"the onnxruntime backend has no option(s) {', '.join(unknown)}",
            hint=f"options: {', '.join(DEFAULTS)}",
        )
    cfg = {**DEFAULTS, **options}
    for key in ("threads", "inter_threads"):
        v = cfg[key]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise BackendError(f"onnxruntime option {key}={v!r}: give a positive int (or None for the default)")
    if cfg["optimization"] not in OPTIMIZATION:
        raise BackendError(
            f"onnxruntime option optimization={cfg['optimization']!r} is not a level",
            hint=f"levels: {', '.join(OPTIMIZATION)}",
        )
    if cfg["exporter"] not in EXPORTERS:
        raise BackendError(
            f"onnxruntime option exporter={cfg['exporter']!r}", hint=f"exporters: {', '.join(EXPORTERS)}"
        )
    if isinstance(cfg["providers"], str):
        cfg["providers"] = (cfg["providers"],)
    cfg["providers"] = tuple(cfg["providers"])
    cfg["spinning"] = bool(cfg["spinning"])
    cfg["split_batch"] = bool(cfg["split_batch"])
    return cfg


class OrtModule(nn.Module):
    """An eval-graph network run by onnxruntime: torch tensors in and out, any batch size.

    Args:
        net: the torch backend's eager-ops module for `graph` (its layers become this module's).
        graph: the eval graph.
        options: session options (see `configure`).
    """

    def __init__(self, net: nn.Module, graph: Graph, **options: Any) -> None:
        super().__init__()
        # the layers are registered here, so state_dict keys are the torch backend's
        for name, child in net.named_children():
            self.add_module(name, child)
        for name, p in net.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in net.named_buffers(recurse=False):
            self.register_buffer(name, b)
        # not a submodule (its keys would be prefixed); it shares the layers registered above
        self.__dict__["_net"] = net
        self.__dict__["_sessions"] = {}  # intra-op threads -> InferenceSession, for the weights of _stamp
        self.__dict__["_model"] = None  # the exported file's bytes, while a session may still be built from them
        self.__dict__["_stamp"] = None
        self.__dict__["_pool"] = None  # (workers, ThreadPoolExecutor) for split batches
        self.input_shape = tuple(graph.input.shape)
        self.outputs = output_names(graph)
        self.output_keys = list(graph.output_names)
        self.graph_name = graph.name
        self.__dict__["_graph"] = graph
        self.options = check_options({})
        self.configure(**options)

    def configure(self, **options: Any) -> None:
        """Change session options; the session is rebuilt on the next call.

        Args:
            threads: onnxruntime's intra-op threads (default: torch.get_num_threads() when the session is built).
            inter_threads: inter-op threads (default: onnxruntime's).
            optimization: graph optimisation level: disable, basic, extended, layout or all (default).
            spinning: let idle intra-op threads spin (onnxruntime's default); off by default here, since the
                caller's own threads (torch's) share the CPUs between calls.
            split_batch: run a batch of at least `threads` samples as `threads` slices at once, each through a
                one-thread session (default True; CPU provider only).
            exporter: "dynamo" (default) or "legacy", as `archc export --onnx-exporter`.
            opset: the ONNX opset (default: the exporter's).
            providers: onnxruntime execution providers (default: CPUExecutionProvider).
            session_options: an `onnxruntime.SessionOptions` to start from; the options above override it.

        Raises:
            BackendError: an unknown option or a bad value.
        """
        self.options = check_options({**{k: v for k, v in self.options.items() if v != DEFAULTS[k]}, **options})
        self._drop_sessions()

    def _drop_sessions(self) -> None:
        self.__dict__["_sessions"] = {}
        self.__dict__["_model"] = None
        self.__dict__["_stamp"] = None

    def extra_repr(self) -> str:
        changed = {k: v for k, v in self.options.items() if v != DEFAULTS[k] and k != "session_options"}
        return f"onnxruntime, input Nx{'x'.join(map(str, self.input_shape))}" + "".join(
            f", {k}={v!r}" for k, v in changed.items()
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # an InferenceSession and a thread pool do not pickle
        state.update(_sessions={}, _model=None, _stamp=None, _pool=None)
        return state

    def _fingerprint(self) -> tuple[tuple[int, int], ...]:
        return tuple((t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers()))

    def export(self, path: str | os.PathLike) -> str:
        """Write the network, with its current weights, as ONNX (batch dimension dynamic, named `batch`).

        Returns:
            How it was written, e.g. "dynamo exporter, opset 20".

        Raises:
            ExportError: the exporter failed or a package it needs is missing.
        """
        net = self.__dict__["_net"].eval()
        x = torch.zeros(EXAMPLE_BATCH, *self.input_shape, device=next(self.parameters()).device)
        # the session may be (re)built inside the caller's inference_mode: export with ordinary tensors
        with torch.inference_mode(False), torch.no_grad():
            return export_onnx(
                net, self.__dict__["_graph"], x, Path(path), self.options["opset"], self.options["exporter"]
            )

    def threads(self) -> int:
        """The intra-op threads of the session (the `threads` option, or torch's thread count)."""
        return self.options["threads"] or torch.get_num_threads()

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
                self._drop_sessions()  # free the old ones first: each holds a copy of the weights
                sessions = self.__dict__["_sessions"]
            with tempfile.TemporaryDirectory(prefix="archc-ort-") as tmp:
                path = Path(tmp) / f"{self.graph_name}.onnx"
                self.export(path)
                self.__dict__["_model"] = path.read_bytes()
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

    def _split(self, batch: int) -> int:
        """How many slices forward() runs a batch in: threads() when split_batch applies, else 1."""
        n = self.threads()
        cpu_only = self.options["providers"] == ("CPUExecutionProvider",)
        return n if self.options["split_batch"] and cpu_only and n > 1 and batch >= n else 1

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
        if tuple(x.shape[1:]) != self.input_shape:
            raise BackendError(
                f"{self.graph_name} takes N x {'x'.join(map(str, self.input_shape))} input, "
                f"got {'x'.join(map(str, x.shape))}"
            )
        if torch.is_grad_enabled() and x.requires_grad:
            raise BackendError(
                "the onnxruntime backend computes no gradients",
                hint="use backend='torch' to train or to differentiate through the network",
            )
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        parts = self._split(arr.shape[0])
        outs = self._run_split(arr, parts) if parts > 1 else self.session().run(self.outputs, {"input": arr})
        got = [torch.from_numpy(o).to(x.device, x.dtype) for o in outs]
        if self.output_keys:
            return dict(zip(self.output_keys, got, strict=True))
        return got[0] if len(got) == 1 else tuple(got)
