"""`archc bench`: img/s, peak memory and build time of archc's modules against eager PyTorch.

The eager baseline of every spec is the spec compiled with no passes; `reference` holds the
hand-written nets (a second baseline for the paper's nets) and `reference_for(graph)`;
`runner` the measurements and `workload` their settings (BenchConfig). They need torch, so this
package imports none of them until asked.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BenchConfig", "Reference", "reference_for", "run"]


def __getattr__(name: str) -> Any:
    if name in ("Reference", "reference_for"):
        from archc.bench import reference

        return getattr(reference, name)
    if name == "BenchConfig":
        from archc.bench.workload import BenchConfig

        return BenchConfig
    if name == "run":
        from archc.bench.runner import run

        return run
    raise AttributeError(f"module 'archc.bench' has no attribute {name!r}")
