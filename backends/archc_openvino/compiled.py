"""OvModule: the torch backend's parameters in an nn.Module whose forward runs an OpenVINO compiled model.

The module exports its layers to ONNX with archc's exporter (as the onnxruntime backend does:
`archc.engine_module`), reads the file into an `openvino.Model`, and compiles it for the CPU
plugin on first use, again after any change of weights.

Two choices set it apart from compiling the exported file once:

* `static_shapes` (default on): one compiled model per batch size, with the batch dimension
  fixed. OpenVINO's CPU plugin plans memory and picks kernels for a static shape at compile
  time; with the batch dimension dynamic it must plan them for shapes it does not know yet.
  ResNet-50 at batch 1 on the 2-core machine of BENCHMARKS.md, one run of paired rounds
  (2026-12-01): 1.09x onnxruntime with the batch fixed, 1.05x with it dynamic. The
  `max_shapes` most recently used are kept (each holds a copy of the weights in the plugin's
  layout).
* `split_batch` (default on): a batch that `split_parts` splits (at least `threads` samples,
  each slice worth `MIN_SLICE_MACS`) runs as `threads` slices at once, each an asynchronous
  request on its own stream of one thread (NUM_STREAMS = threads), so no thread waits for
  another after every layer; other batches run one request with every thread (the LATENCY
  hint).

The compiled precision is float32 (`precision="f32"`): on CPUs with bf16 or fp16 units the
plugin would otherwise lower precision by itself, and outputs would move past archc's 1e-4.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from archc.engine_module import EngineModule
from archc.errors import BackendError

PRECISIONS = ("f32", "bf16", "f16", "auto")
DEFAULTS: dict[str, Any] = {
    "threads": None,
    "device": "CPU",
    "precision": "f32",
    "static_shapes": True,
    "split_batch": True,
    "max_shapes": 4,
    "exporter": "dynamo",
    "opset": None,
    "config": None,
}


class OvModule(EngineModule):
    """An eval-graph network run by OpenVINO: torch tensors in and out, any batch size.

    Args:
        net: the torch backend's eager-ops module for `graph` (its layers become this module's).
        graph: the eval graph.
        options: see `configure`.
    """

    engine = "openvino"
    TRANSIENT = {
        "_model": None,  # the openvino.Model read from the export, for the weights of _stamp
        "_stamp": None,
        "_compiled": OrderedDict(),  # (batch or None, streams) -> (CompiledModel, [InferRequest]), LRU order
        "_lock": None,  # requests are reused: one forward at a time per module
    }

    DEFAULTS = DEFAULTS

    @classmethod
    def _check_values(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        # not in COUNTS: it has no None default
        shapes = cfg["max_shapes"]
        if not isinstance(shapes, int) or isinstance(shapes, bool) or shapes < 1:
            raise BackendError(f"openvino option max_shapes={shapes!r}: give a positive int")
        if cfg["precision"] not in PRECISIONS:
            raise BackendError(
                f"openvino option precision={cfg['precision']!r} is not a precision",
                hint=f"precisions: {', '.join(PRECISIONS)} (auto: the plugin's choice, which may be below float32)",
            )
        if cfg["config"] is not None and not isinstance(cfg["config"], dict):
            raise BackendError(
                f"openvino option config={cfg['config']!r}: give a dict of OpenVINO properties",
                hint='e.g. {"ENABLE_CPU_PINNING": True}',
            )
        if not isinstance(cfg["device"], str) or not cfg["device"]:
            raise BackendError(f"openvino option device={cfg['device']!r}: give an OpenVINO device name such as 'CPU'")
        cfg["static_shapes"] = bool(cfg["static_shapes"])
        return cfg

    def configure(self, **options: Any) -> None:
        """Change options; the model is compiled again on the next call.

        Args:
            threads: inference threads (default: torch.get_num_threads() when compiled).
            device: the OpenVINO device (default "CPU").
            precision: "f32" (default), "bf16", "f16", or "auto" (the plugin's choice).
            static_shapes: compile one model per batch size with the batch fixed (default True).
            split_batch: run a batch of at least `threads` samples as `threads` slices at once, one stream
                each (default True).
            max_shapes: compiled models kept, most recently used first (default 4).
            exporter: "dynamo" (default) or "legacy", as `archc export --onnx-exporter`.
            opset: the ONNX opset (default: the exporter's).
            config: more OpenVINO properties for compile_model (they override the ones above).

        Raises:
            BackendError: an unknown option or a bad value.
        """
        super().configure(**options)

    def properties(self, streams: int = 1) -> dict[str, Any]:
        """The compile_model properties for `streams` streams (1: one request with every thread)."""
        cfg = self.options
        props: dict[str, Any] = {"INFERENCE_NUM_THREADS": self.threads()}
        if streams > 1:
            props.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams)
        else:
            props["PERFORMANCE_HINT"] = "LATENCY"
        if cfg["precision"] != "auto":
            props["INFERENCE_PRECISION_HINT"] = cfg["precision"]
        return {**props, **(cfg["config"] or {})}

    def model(self) -> Any:
        """The openvino.Model of the current weights (exported and read again after any change)."""
        import openvino as ov

        stamp = self._fingerprint()
        if stamp != self.__dict__["_stamp"]:
            self._drop_engines()  # free the old compiled models first: each holds a copy of the weights
            self.__dict__["_model"] = ov.Core().read_model(self.exported_bytes())
            self.__dict__["_stamp"] = stamp
        return self.__dict__["_model"]

    def compiled(self, batch: int | None = None, streams: int = 1) -> tuple[Any, list[Any]]:
        """The compiled model for `batch` (None: batch dimension dynamic) and `streams`, one request per stream.

        Raises:
            BackendError: OpenVINO could not compile the network (a bad device or property, an unsupported op).
        """
        import openvino as ov

        model = self.model()
        key = (batch if self.options["static_shapes"] else None, streams)
        cache = self.__dict__["_compiled"]
        if key not in cache:
            if key[0] is not None:
                model = model.clone()
                model.reshape([key[0], *self.input_shape])
            try:
                cm = ov.Core().compile_model(model, self.options["device"], self.properties(streams))
            except Exception as exc:  # OpenVINO's own errors (a bad device or property, an unsupported op)
                raise BackendError(f"OpenVINO could not compile the exported network: {exc}") from exc
            cache[key] = (cm, [cm.create_infer_request() for _ in range(streams)])
            while len(cache) > self.options["max_shapes"]:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return cache[key]

    def _cpu_only(self) -> bool:
        return self.options["device"] == "CPU"

    def _outputs(self, request: Any) -> list[np.ndarray]:
        # copies: the request's output buffers are reused by its next inference
        return [np.array(request.get_tensor(name).data) for name in self.outputs]

    def forward(self, x: torch.Tensor) -> Any:
        """Run the compiled model on `x` (N x input shape); outputs as the torch backend returns them, on x's device."""
        arr = self.input_array(x)
        if self.__dict__["_lock"] is None:
            self.__dict__["_lock"] = threading.Lock()
        with self.__dict__["_lock"]:
            parts = self.split_parts(arr.shape[0])
            if parts == 1:
                _, (request,) = self.compiled(arr.shape[0])
                request.infer({0: arr})
                outs = self._outputs(request)
            else:
                slices = np.array_split(arr, parts)  # sizes at most one apart
                # one compiled model per slice size (one for all when shapes are dynamic), each with a request per
                # stream; the tuples stay referenced here while their requests run
                models = {n: self.compiled(n, parts) for n in sorted({len(s) for s in slices})}
                free = {id(m): iter(m[1]) for m in models.values()}
                running = [(next(free[id(models[len(s)])]), s) for s in slices]
                for request, s in running:
                    request.start_async({0: s})
                for request, _ in running:
                    request.wait()
                outs = [np.concatenate(o) for o in zip(*(self._outputs(r) for r, _ in running), strict=True)]
        return self.pack_outputs(outs, x)
