"""The reference torch backend: executes the generated PyTorch source into an nn.Module."""

from __future__ import annotations

import itertools
import linecache
from typing import Any

from archc.errors import BackendError
from archc.ir import Graph
from archc_torch.codegen import class_name, generate

__all__ = ["TorchBackend", "class_name", "generate"]
__version__ = "0.1.0"

_counter = itertools.count()
# torch.nn.Module attributes a layer name must not shadow
_RESERVED = None


def _reserved() -> set[str]:
    global _RESERVED
    if _RESERVED is None:
        import torch

        _RESERVED = set(dir(torch.nn.Module()))
    return _RESERVED


class TorchBackend:
    """Lower a graph to plain PyTorch modules (cuDNN / CPU kernels through torch)."""

    name = "torch"
    version = __version__

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
        reserved = _reserved()
        for node in graph.nodes():
            for part in node.name.split("."):
                if part in reserved:
                    raise BackendError(
                        f"layer name '{part}' ({node.name}, at {node.loc}) is reserved by torch.nn.Module",
                        hint="rename the layer or block label",
                    )
        src, cls = generate(graph, origin)
        filename = f"<archc:{graph.name}:{next(_counter)}>"
        # let tracebacks and inspect.getsource show the generated lines
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        namespace: dict[str, Any] = {"__name__": f"archc_generated_{graph.name}"}
        exec(compile(src, filename, "exec"), namespace)
        module = namespace[cls]()
        module.archc_source = src
        return module
