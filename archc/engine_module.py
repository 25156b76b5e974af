"""EngineModule: the torch backend's layers in an nn.Module whose forward runs an inference engine on their ONNX export.

The inference-only backends (onnxruntime, openvino) share everything but the engine: the module
holds the eval graph's layers as the torch backend builds them in eager ops
(`TorchBackend.exportable`), so its state_dict keys are the torch backend's and archc loads
weights into it as into any backend's module. The engine is built from archc's ONNX export of
those layers (`archc.onnx_export`, the exporter behind `archc export`) on the first call, and
again after any parameter or buffer changed (a `load_state_dict`, an in-place edit: each
tensor's version counter moves). Subclasses own the engine; this class owns the layers, the
export, the weights' fingerprint, the input checks and the outputs' packing.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archc.engine_backend import check_engine_options
from archc.errors import BackendError
from archc.ir import Graph
from archc.onnx_export import export_onnx, output_names

EXAMPLE_BATCH = 2  # not 1: torch.export specialises a dimension whose example size is 1
# split_batch pays off only when each slice has enough work to hide handing it to another thread:
# ResNet-20 at 32x32, batch 8 (0.16 GMACs a slice) took 11.4 ms split against 6.7 whole in onnxruntime,
# MobileNetV2 at 64x64, batch 8 (0.10) 12.1 against 8.3; at 128x128 (0.40) 19.4 against 21.4, and
# ResNet-50 at 224x224, batch 8 (16) gained 1.06x (2026-12-01, 2 threads; BENCHMARKS.md).
MIN_SLICE_MACS = 0.3e9


class EngineModule(nn.Module):
    """An eval-graph network run by an inference engine from its ONNX export: torch tensors in and out.

    Subclasses set `engine` (the backend's name, for messages), `DEFAULTS` (every option, with at least
    `threads`, `split_batch`, `opset` and `exporter`), `COUNTS` (the options that are a thread count or
    another positive int), and `TRANSIENT` (attributes that hold engine objects: reset by `_drop_engines`,
    not pickled); they check their own options' values in `_check_values`.

    Args:
        net: the torch backend's eager-ops module for `graph` (its layers become this module's).
        graph: the eval graph.
        options: the backend's options (see `configure`).
    """

    engine = "an inference engine"
    DEFAULTS: dict[str, Any] = {"threads": None, "split_batch": True, "exporter": "dynamo", "opset": None}
    COUNTS: tuple[str, ...] = ("threads",)
    HIDDEN: tuple[str, ...] = ()  # options extra_repr leaves out (objects without a useful repr)
    TRANSIENT: dict[str, Any] = {}

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Validate options against DEFAULTS; return the full set.

        Raises:
            BackendError: an unknown option or a bad value.
        """
        return cls._check_values(check_engine_options(cls.engine, options, cls.DEFAULTS, cls.COUNTS))

    @classmethod
    def _check_values(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """The backend's own checks and normalisations of a full option set (none here)."""
        return cfg

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
        self.__dict__["_graph"] = graph
        self.__dict__.update(self._transient())
        self.input_shape = tuple(graph.input.shape)
        self.outputs = output_names(graph)
        self.output_keys = list(graph.output_names)
        self.graph_name = graph.name
        self.sample_macs = graph.macs()  # multiply-adds per sample, for split_batch
        self.options = self.check_options({})
        self.configure(**options)

    def configure(self, **options: Any) -> None:
        """Change options (the others keep their values); the engine is built again on the next call.

        Raises:
            BackendError: an unknown option or a bad value.
        """
        self.__dict__.pop("_weight_slots", None)
        kept = {k: v for k, v in self.options.items() if v != self.DEFAULTS[k]}
        self.options = self.check_options({**kept, **options})
        self._drop_engines()

    def _drop_engines(self) -> None:
        self.__dict__.update(self._transient())

    def extra_repr(self) -> str:
        changed = {k: v for k, v in self.options.items() if v != self.DEFAULTS[k] and k not in self.HIDDEN}
        return f"{self.engine}, input Nx{'x'.join(map(str, self.input_shape))}" + "".join(
            f", {k}={v!r}" for k, v in changed.items()
        )

    def threads(self) -> int:
        """The engine's threads: the `threads` option, or torch's thread count."""
        return self.options["threads"] or torch.get_num_threads()

    def split_parts(self, batch: int) -> int:
        """How many slices forward() runs a batch of `batch` in: threads() when split_batch applies, else 1.

        It applies when the option is on, the engine runs on the CPU (`_cpu_only`), there are at least two
        threads and as many samples, and each slice holds at least MIN_SLICE_MACS multiply-adds.
        """
        n = self.threads()
        if not (self.options["split_batch"] and self._cpu_only() and n > 1 and batch >= n):
            return 1
        return n if self.sample_macs * (batch // n) >= MIN_SLICE_MACS else 1

    def _cpu_only(self) -> bool:
        return True

    def _transient(self) -> dict[str, Any]:
        """Fresh values for the TRANSIENT attributes (copies: no two modules share a cache)."""
        return {k: copy.copy(v) for k, v in self.TRANSIENT.items()}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(self._transient())  # engine objects and thread pools do not pickle
        state.pop("_weight_slots", None)  # they point into this module's dicts, not the copy's
        return state

    def _slots(self) -> list[tuple[dict[str, Any], str]]:
        """(the owning module's _parameters or _buffers dict, name) for every weight, listed once.

        Reading each slot per call sees a replaced parameter or buffer; walking the module tree per
        call (`parameters()`) cost 0.36 to 0.56 ms a call on MobileNetV2's 300 tensors (measured
        2026-12-01), more than the network's run at small inputs. A submodule added or replaced after
        construction is not seen: call configure() after such a change.
        """
        slots = self.__dict__.get("_weight_slots")
        if slots is None:
            slots = [(store, name) for m in self.modules() for store in (m._parameters, m._buffers) for name in store]
            self.__dict__["_weight_slots"] = slots
        return slots

    def _fingerprint(self) -> tuple[tuple[int, int], ...]:
        """Where each weight lives and its version counter: any change of weights changes it.

        An inference tensor (made under torch.inference_mode, e.g. by a deepcopy there) has no version
        counter, and is counted by where it lives only: inference tensors cannot be edited in place outside
        inference_mode.
        """
        out = []
        for store, name in self._slots():
            t = store.get(name)
            if t is not None:
                out.append((t.data_ptr(), -1 if t.is_inference() else t._version))
        return tuple(out)

    def export(self, path: str | os.PathLike) -> str:
        """Write the network, with its current weights, as ONNX (batch dimension dynamic, named `batch`).

        Returns:
            How it was written, e.g. "dynamo exporter, opset 20".

        Raises:
            ExportError: the exporter failed or a package it needs is missing.
        """
        net = self.__dict__["_net"].eval()
        x = torch.zeros(EXAMPLE_BATCH, *self.input_shape, device=next(self.parameters()).device)
        # the engine may be (re)built inside the caller's inference_mode: export with ordinary tensors
        with torch.inference_mode(False), torch.no_grad():
            return export_onnx(
                net, self.__dict__["_graph"], x, Path(path), self.options["opset"], self.options["exporter"]
            )

    def exported_bytes(self) -> bytes:
        """The ONNX file export() writes, as bytes (written to a temporary directory, then removed)."""
        with tempfile.TemporaryDirectory(prefix="archc-onnx-") as tmp:
            path = Path(tmp) / f"{self.graph_name}.onnx"
            self.export(path)
            return path.read_bytes()

    def input_array(self, x: torch.Tensor) -> np.ndarray:
        """`x` as a contiguous float32 numpy array on the CPU (a view when it already is one).

        Raises:
            BackendError: a wrong input shape, or an input that asks for gradients.
        """
        if tuple(x.shape[1:]) != self.input_shape:
            raise BackendError(
                f"{self.graph_name} takes N x {'x'.join(map(str, self.input_shape))} input, "
                f"got {'x'.join(map(str, x.shape))}"
            )
        if torch.is_grad_enabled() and x.requires_grad:
            raise BackendError(
                f"the {self.engine} backend computes no gradients",
                hint="use backend='torch' to train or to differentiate through the network",
            )
        return x.detach().to("cpu", torch.float32).contiguous().numpy()

    def pack_outputs(self, outs: list[np.ndarray], like: torch.Tensor) -> Any:
        """The engine's output arrays as the torch backend returns them, on `like`'s device and dtype."""
        got = [torch.from_numpy(o).to(like.device, like.dtype) for o in outs]
        if self.output_keys:
            return dict(zip(self.output_keys, got, strict=True))
        return got[0] if len(got) == 1 else tuple(got)
