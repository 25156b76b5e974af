"""PassManager: run IR -> IR passes in order, lint after each, time each, dump on request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from archc.errors import ArchcError, did_you_mean
from archc.ir import Graph


@dataclass(frozen=True)
class Pass:
    """A named graph rewrite.

    Attributes:
        name: what `--passes` calls it.
        run: rewrites the graph in place and returns the number of changes made.
        doc: one line for `--help` listings.
    """

    name: str
    run: Callable[[Graph], int]
    doc: str


PASSES: dict[str, Pass] = {}


def register(name: str, doc: str) -> Callable[[Callable[[Graph], int]], Callable[[Graph], int]]:
    """Decorator: make a rewrite function available to pipelines under `name`."""

    def wrap(fn: Callable[[Graph], int]) -> Callable[[Graph], int]:
        PASSES[name] = Pass(name, fn, doc)
        return fn

    return wrap


@dataclass
class PassRecord:
    """What one pass did: its name, changes made, and milliseconds taken (lint included)."""

    name: str
    changes: int
    ms: float


@dataclass
class PassManager:
    """Run passes in order; lint after each; optionally keep text dumps after chosen passes.

    Args:
        passes: pass names, in order.
        dump_after: pass names after which to keep `graph.dump_text()`.
    """

    passes: list[str]
    dump_after: list[str] = field(default_factory=list)
    records: list[PassRecord] = field(default_factory=list)
    dumps: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in list(self.passes) + list(self.dump_after):
            if name not in PASSES:
                raise ArchcError(
                    f"unknown pass '{name}'",
                    hint=did_you_mean(name, PASSES) or f"passes: {', '.join(sorted(PASSES))}",
                )
        missing = [d for d in self.dump_after if d not in self.passes]
        if missing:
            raise ArchcError(f"--dump-after {missing[0]}: that pass is not in the pipeline")

    def run(self, graph: Graph) -> Graph:
        """Run the pipeline on `graph` (in place) and return it.

        Raises:
            LintError: a pass broke an IR invariant (a compiler bug).
        """
        for name in self.passes:
            t0 = time.perf_counter()
            changes = PASSES[name].run(graph)
            graph.lint()
            self.records.append(PassRecord(name, changes, (time.perf_counter() - t0) * 1e3))
            if name in self.dump_after:
                self.dumps[name] = graph.dump_text()
        return graph
