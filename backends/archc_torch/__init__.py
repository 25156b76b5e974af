"""The reference torch backend: executes the generated PyTorch source into an nn.Module."""

from __future__ import annotations

import itertools
import linecache
from typing import Any

from archc.backend import source_text
from archc.errors import BackendError
from archc.ir import Graph
from archc_torch.codegen import Lowering, class_name, generate

__all__ = ["Lowering", "TorchBackend", "check_names", "class_name", "generate", "instantiate"]
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
