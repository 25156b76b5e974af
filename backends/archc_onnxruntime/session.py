"""OrtModule: the torch backend's parameters in an nn.Module whose forward runs an onnxruntime session.

The module holds the eval graph's layers as the torch backend builds them in eager ops
(`TorchBackend.exportable`), so its state_dict keys are the torch backend's and archc loads
weights into it as into any backend's module. On the first call, and again after any
parameter or buffer changed (a `load_state_dict`, an in-place edit: each tensor's version
counter moves), it exports those layers to ONNX with archc's exporter (`archc.onnx_export`,
the one `archc export` uses) and builds an InferenceSession from the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

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
        self.__dict__["_session"] = None
        self.__dict__["_stamp"] = None
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
            exporter: "dynamo" (default) or "legacy", as `archc export --onnx-exporter`.
            opset: the ONNX opset (default: the exporter's).
            providers: onnxruntime execution providers (default: CPUExecutionProvider).
            session_options: an `onnxruntime.SessionOptions` to start from; the options above override it.

        Raises:
            BackendError: an unknown option or a bad value.
        """
        self.options = check_options({**{k: v for k, v in self.options.items() if v != DEFAULTS[k]}, **options})
        self.__dict__["_session"] = None

    def extra_repr(self) -> str:
        changed = {k: v for k, v in self.options.items() if v != DEFAULTS[k] and k != "session_options"}
        return f"onnxruntime, input Nx{'x'.join(map(str, self.input_shape))}" + "".join(
            f", {k}={v!r}" for k, v in changed.items()
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = state["_stamp"] = None  # an InferenceSession does not pickle
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

    def session_options(self) -> Any:
        """The `onnxruntime.SessionOptions` the session is built with."""
        import onnxruntime as ort

        cfg = self.options
        so = cfg["session_options"] or ort.SessionOptions()
        so.graph_optimization_level = _level(cfg["optimization"])
        so.intra_op_num_threads = cfg["threads"] or torch.get_num_threads()
        if cfg["inter_threads"]:
            so.inter_op_num_threads = cfg["inter_threads"]
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg["spinning"] else "0")
        return so

    def session(self) -> Any:
        """The InferenceSession for the current weights and options, built (or rebuilt) when needed."""
        import onnxruntime as ort

        stamp = self._fingerprint()
        if self.__dict__["_session"] is None or stamp != self.__dict__["_stamp"]:
            self.__dict__["_session"] = None  # free the old one first: a second copy of the weights
            with tempfile.TemporaryDirectory(prefix="archc-ort-") as tmp:
                path = Path(tmp) / f"{self.graph_name}.onnx"
                self.export(path)
                try:
                    sess = ort.InferenceSession(
                        str(path), self.session_options(), providers=list(self.options["providers"])
                    )
                except Exception as exc:  # onnxruntime's own errors (a bad provider, an unsupported op)
                    raise BackendError(f"onnxruntime could not load the exported network: {exc}") from exc
            self.__dict__["_session"] = sess
            self.__dict__["_stamp"] = stamp
        return self.__dict__["_session"]

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
        sess = self.session()
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        got = [torch.from_numpy(o).to(x.device, x.dtype) for o in sess.run(self.outputs, {"input": arr})]
        if self.output_keys:
            return dict(zip(self.output_keys, got, strict=True))
        return got[0] if len(got) == 1 else tuple(got)
