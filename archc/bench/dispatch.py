"""How often a model's backend modules ran their own kernels and how often a torch fallback.

A backend module that can fall back to plain torch ops (for a dtype, device or autograd
case its kernels do not cover) may count its calls and expose them as a method
`dispatch_counts() -> dict[str, int]`: the key "kernel" for calls its kernels ran, any other
key a fallback's reason. The core reads them duck-typed, without importing any backend, so
`archc bench` can show that a benchmark measured the kernels and not the fallback.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

KERNEL = "kernel"


def dispatch_counts(model: Any) -> dict[str, int]:
    """Sum of `dispatch_counts()` over a model's modules: {"kernel": n, fallback reason: n, ...}.

    Args:
        model: an nn.Module.

    Returns:
        The counts since the modules were built, sorted by key; empty when no module counts.
    """
    total: Counter[str] = Counter()
    for m in model.modules():
        fn = getattr(m, "dispatch_counts", None)
        if callable(fn):
            total.update(fn())
    return dict(sorted(total.items()))


def fallbacks(counts: dict[str, int]) -> int:
    """The number of fallback calls in a `dispatch_counts` result."""
    return sum(n for k, n in counts.items() if k != KERNEL)
