"""An example third-party archc backend: the torch backend's module, counting its forward calls.

It shows everything a backend plugin needs:

* a class registered under the `archc.backends` entry-point group (see pyproject.toml),
  instantiated by archc with no arguments;
* `name`, `lower(graph, origin=..., **options)` and `source(graph, origin=...)`;
* the optional `version` attribute and `available()` check that `archc backends` shows.

It delegates the real work to the installed `torch` backend, which it finds through
the same entry points (archc.backend.get_backend), and adds a forward pre-hook. A hook
adds no parameters or buffers, so the module's state_dict keys stay the spec's and
checkpoints (and archc's BN folding for eval mode) work unchanged.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from archc.errors import ArchcError, BackendError
from archc.ir import Graph

__version__ = "0.1.0"
__all__ = ["ExampleBackend", "ForwardStats", "op_counts"]

log = logging.getLogger(__name__)


def op_counts(graph: Graph) -> dict[str, int]:
    """How many nodes of each op the graph has, most common first (the input node excluded)."""
    counts = Counter(n.op for n in graph.nodes() if n.op != "input")
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _fmt(ops: dict[str, int]) -> str:
    return ", ".join(f"{op} {k}" for op, k in ops.items())


@dataclass
class ForwardStats:
    """What the example backend records about one lowered module (`module.archc_stats`).

    Attributes:
        net: the graph's name.
        ops: nodes per op in the lowered graph (after the pass pipeline).
        log_every: log the op counts every this many forward calls (0: never).
        calls: forward calls so far.
        samples: inputs seen so far (the sum of the batch sizes).
    """

    net: str
    ops: dict[str, int]
    log_every: int = 0
    calls: int = 0
    samples: int = field(default=0)

    def __call__(self, module: Any, args: tuple[Any, ...]) -> None:
        """The forward pre-hook: count the call and the batch, and log every `log_every` calls."""
        self.calls += 1
        x = args[0] if args else None
        if getattr(x, "ndim", 0) > 0:
            self.samples += int(x.shape[0])
        if self.log_every and self.calls % self.log_every == 0:
            log.info("%s: forward #%d (%d samples so far); ops: %s", self.net, self.calls, self.samples, _fmt(self.ops))

    def reset(self) -> None:
        """Zero the counters."""
        self.calls = self.samples = 0


class ExampleBackend:
    """Lower through the torch backend and count forward calls (`module.archc_stats`)."""

    name = "example"
    version = __version__

    def _torch(self) -> Any:
        """The installed torch backend, loaded through the `archc.backends` entry points."""
        from archc.backend import get_backend

        return get_backend("torch")

    def available(self) -> str | None:
        """None when lower() can run here; otherwise why not (shown by `archc backends`)."""
        try:
            torch_backend = self._torch()
        except ArchcError as err:
            return f"needs the torch backend ({err.message})"
        check = getattr(torch_backend, "available", None)
        return check() if callable(check) else None

    def source(self, graph: Graph, origin: str = "a spec") -> str:
        """The torch backend's standalone source, with a header naming this backend and the op counts."""
        header = (
            f"# Lowered by the archc 'example' backend {__version__}: the torch backend's module;\n"
            f"# archc.compile(..., backend='example') adds a forward pre-hook that counts calls.\n"
            f"# ops: {_fmt(op_counts(graph))}\n"
        )
        return header + self._torch().source(graph, origin=origin)

    def lower(self, graph: Graph, origin: str = "a spec", *, log_every: int = 0, **options: Any) -> Any:
        """Build the torch backend's module and attach the call counter.

        Args:
            graph: the linted graph after archc's pass pipeline.
            origin: where the spec came from (for the generated source's header).
            log_every: log the op counts at INFO every this many forward calls (0: never).
            **options: passed on to the torch backend, which refuses any it does not know.

        Raises:
            BackendError: a bad option, or whatever the torch backend refuses.
        """
        if not isinstance(log_every, int) or log_every < 0:
            raise BackendError(f"the example backend's log_every must be an integer >= 0, got {log_every!r}")
        module = self._torch().lower(graph, origin=origin, **options)
        stats = ForwardStats(graph.name, op_counts(graph), log_every)
        module.register_forward_pre_hook(stats)
        module.archc_stats = stats
        module.archc_backend = f"example {__version__}"
        log.info("lowered %s (%d nodes): %s", graph.name, len(graph), _fmt(stats.ops))
        return module
