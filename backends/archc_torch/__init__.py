"""The reference torch backend: executes the generated PyTorch source into an nn.Module."""

from __future__ import annotations

import copy
import itertools
import linecache
from typing import Any

from archc.backend import source_text
from archc.errors import BackendError
from archc.ir import Graph, Node
from archc_torch.codegen import Lowering, class_name, epilogue_expr, generate
from archc_torch.lower_resample import check_exportable

__all__ = ["EagerLowering", "Lowering", "TorchBackend", "check_names", "class_name", "generate", "instantiate"]
__version__ = "0.1.0"

_counter = itertools.count()
_reserved: set[str] = set()


def check_names(graph: Graph) -> None:
    """Refuse layer names that torch.nn.Module reserves (`training`, `forward`, ...).

    Raises:
        BackendError: naming the layer and where the spec gave it.
    """
    if not _reserved:
        import torch

        _reserved.update(dir(torch.nn.Module()))
    for node in graph.nodes():
        for part in node.name.split("."):
            if part in _reserved:
                raise BackendError(
                    f"layer name '{part}' ({node.name}, at {node.loc}) is reserved by torch.nn.Module",
                    hint="rename the layer or block label",
                )


def instantiate(src: str, cls: str, graph_name: str) -> Any:
    """Execute generated source and return an instance of its class `cls`."""
    filename = f"<archc:{source_text(graph_name)}:{next(_counter)}>"  # compile() refuses a NUL in it
    # let tracebacks and inspect.getsource show the generated lines
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": f"archc_generated_{graph_name}"}
    exec(compile(src, filename, "exec"), namespace)
    module = namespace[cls]()
    module.archc_source = src
    return module


class EagerLowering(Lowering):
    """The lowering with fused_conv as conv(x) [+ r] [-> act] in eager ops, for torch's exporters.

    FusedConv2d's CPU fast path is a oneDNN call that neither ONNX nor TorchScript can express;
    an adaptive_maxpool whose size does not divide its input's is refused (ONNX has no such op).
    """

    def fused_conv(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        ctor, _ = self.conv(n, ins)
        expr = f"{{m}}({ins[0]})" + (f".add_({ins[1]})" if n.attrs["residual"] else "")
        return ctor, epilogue_expr(n, expr)

    def adaptive_maxpool(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        check_exportable(n, self._in(n))
        return super().adaptive_maxpool(n, ins)


class TorchBackend:
    """Lower a graph to plain PyTorch modules (cuDNN / CPU kernels through torch)."""

    name = "torch"
    version = __version__

    def available(self) -> str | None:
        """None when lower() can run here (torch is installed); otherwise why not."""
        import importlib.util

        return None if importlib.util.find_spec("torch") else "needs the torch package (pip install torch)"

    def source(self, graph: Graph, origin: str = "a spec") -> str:
        """Standalone Python source of the module (imports only torch)."""
        return generate(graph, origin)[0]

    def exportable(self, graph: Graph, origin: str = "a spec") -> Any:
        """The module in eager ops only (EagerLowering), freshly initialised, with lower()'s parameter names.

        It is NCHW: the exported formats have no memory format, and a channels_last view (the
        flatten after global pooling) would reach the ONNX file as an as_strided gather.

        Raises:
            BackendError: a layer name that torch.nn.Module reserves.
        """
        check_names(graph)
        if "memory_format" in graph.meta:
            # a shallow copy with its own meta: archc keeps using the caller's graph, and a
            # Graph.from_dict copy would lose the creation order that orders the state_dict
            graph = copy.copy(graph)
            graph.meta = {k: v for k, v in graph.meta.items() if k != "memory_format"}
        src, cls = generate(graph, origin, lowering=EagerLowering)
        return instantiate(src, cls, graph.name)

    def lower(self, graph: Graph, origin: str = "a spec", **options: Any) -> Any:
        """Build the module: generate its source, execute it, instantiate the class.

        Raises:
            BackendError: a layer name that torch.nn.Module reserves, or an unknown option.
        """
        if options:
            raise BackendError(f"the torch backend has no option(s) {', '.join(sorted(options))}")
        check_names(graph)
        src, cls = generate(graph, origin)
        return instantiate(src, cls, graph.name)
