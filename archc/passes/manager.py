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
        requires: passes that must run before this one when the pipeline has them too.
    """

    name: str
    run: Callable[[Graph], int]
    doc: str
    requires: tuple[str, ...] = ()


PASSES: dict[str, Pass] = {}


def register(
    name: str, doc: str, requires: tuple[str, ...] = ()
) -> Callable[[Callable[[Graph], int]], Callable[[Graph], int]]:
    """Decorator: make a rewrite function available to pipelines under `name`.

    Args:
        name: what `--passes` calls it.
        doc: one line for listings.
        requires: passes this one must follow. A requirement orders, it does not insist: a pipeline
            without the required pass is accepted (`--passes fuse_eval` alone still fuses plain
            conv+ReLU), one that has it after this pass is refused.
    """

    def wrap(fn: Callable[[Graph], int]) -> Callable[[Graph], int]:
        PASSES[name] = Pass(name, fn, doc, tuple(requires))
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

    Raises:
        ArchcError: an unknown pass, a dump after a pass not run, or a pass listed before one it
            requires (see `register`).
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
        self._check_order()

    def _check_order(self) -> None:
        """Refuse a pipeline where a pass first runs before a pass it requires.

        Raises:
            ArchcError: naming both passes and the order to use.
        """
        first: dict[str, int] = {}
        for i, name in enumerate(self.passes):
            first.setdefault(name, i)
        for name, i in first.items():
            for need in PASSES[name].requires:
                if need in first and first[need] > i:
                    fixed = [p for p in self.passes if p != need]
                    fixed.insert(fixed.index(name), need)
                    raise ArchcError(
                        f"pass '{name}' runs before '{need}', which it requires to run first",
                        hint=f"put {need} before {name}: --passes {','.join(fixed)}",
                    )

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
