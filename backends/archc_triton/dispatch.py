"""Kernel or torch fallback: the dtype a Triton-backed module computes in, and a count of each choice.

Under torch.autocast the parameters stay float32 while activations arrive in bfloat16
(or float16). A module that compared the input's dtype with its weight's would fall back
to torch on every call of a mixed-precision run, and a benchmark would then measure torch,
not Triton. So the modules follow autocast's rule instead: when autocast is on for the
input's device, they compute in autocast's dtype, with the input cast to it and a cached
copy of the weight in it (`CastCache`). The copy is made again when the parameter changes:
an optimizer step or `copy_` bumps its version counter, `.to()` gives it new storage.

Every call is counted per module (`Dispatch.counts`, read through the module's
`dispatch_counts()` method): "kernel", or the reason for the fallback.
archc.bench.dispatch sums them over a model for `archc bench` (duck-typed: the core never
imports a backend).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from archc.bench.dispatch import KERNEL

# what the kernels read and write; anything else (float64, integers) takes the torch path
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def tf32_enabled() -> bool:
    """Whether cuDNN may use TF32 for float32 convolutions (so the Triton GEMM may too).

    Reads the `fp32_precision` settings where torch has them (>= 2.9: the convolution's
    own, else cuDNN's, else the global one; "none" defers to the next), and the legacy
    `allow_tf32` flag only on older torch, where reading it is the only way and never raises.
    """
    backends = torch.backends
    conv = getattr(getattr(backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is None:
        return bool(backends.cudnn.allow_tf32)
    cudnn, top = getattr(backends.cudnn, "fp32_precision", "none"), getattr(backends, "fp32_precision", "none")
    for setting in (conv, cudnn, top):
        if setting != "none":
            return setting == "tf32"
    return False


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a kernel should compute x in: autocast's when autocast is on for x's device, else x's."""
    kind = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def interpreted_device_ok(t: torch.Tensor, interpreting: bool) -> bool:
    """True when Triton can run on t's device: a CUDA tensor, or a CPU tensor under the interpreter."""
    return t.device.type == "cuda" or (t.device.type == "cpu" and interpreting)


class CastCache:
    """A copy of one parameter in another dtype, made again only when the parameter changes."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._copy: torch.Tensor | None = None

    def get(self, p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """p in `dtype`: p itself when it already is, else the cached copy (refreshed if p changed).

        Args:
            p: a parameter (or any tensor).
            dtype: the dtype wanted.

        Returns:
            A tensor equal to p.to(dtype), without autograd history.
        """
        if p.dtype == dtype:
            return p
        try:
            version = p._version
        except RuntimeError:  # an inference tensor has no version counter: copy every time
            version = None
        key = (dtype, p.device, p.data_ptr(), tuple(p.shape), version)
        if version is None or key != self._key or self._copy is None:
            with torch.no_grad():
                self._copy = p.detach().to(dtype)
            self._key = key
        return self._copy

    def clear(self) -> None:
        """Drop the copy (frees its memory)."""
        self._key = self._copy = None


class Dispatch:
    """Counts of a module's calls: "kernel", or the reason the torch fallback ran."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, reason: str | None) -> bool:
        """Count one call; True when it runs the kernels (reason None)."""
        self.counts[KERNEL if reason is None else reason] += 1
        return reason is None
