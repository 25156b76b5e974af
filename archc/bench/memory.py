"""Peak memory of one benchmark candidate: CUDA's allocator peak on a GPU, the process's peak RSS on CPU.

* GPU: torch.cuda.max_memory_allocated() minus what was allocated before the candidate was
  built (so weights, gradients, optimizer state and activations count);
* CPU (Linux): the process's peak resident set size (VmHWM, reset through
  /proc/self/clear_refs just before the timed steps) minus its resident set size before the
  candidate was built (after freeing the previous one and malloc_trim). It counts pages, not
  tensors, so it is coarser than the GPU figure; where /proc/self/clear_refs cannot be written
  it is not reported.
"""

from __future__ import annotations

import ctypes
import gc
import re
from pathlib import Path
from typing import Any

CPU_MEMORY = "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before the build"
GPU_MEMORY = "torch.cuda.max_memory_allocated minus memory allocated before the build"


def _status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so RSS falls when tensors are freed."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """The peak-memory probe of one device: free, take a base, reset the peak, read the peak above the base.

    Args:
        torch: the torch module (imported by the caller: this module stays light).
        cuda: measure CUDA's allocator (True) or the process's RSS (False).
    """

    def __init__(self, torch: Any, cuda: bool) -> None:
        self.torch = torch
        self.cuda = cuda
        self.metric: str | None = None

    def measurable(self) -> str | None:
        """Set and return `metric`: what the figures mean, or None where this machine cannot measure them."""
        self.metric = GPU_MEMORY if self.cuda else (CPU_MEMORY if _reset_peak_rss() else None)
        return self.metric

    def free(self) -> None:
        """Collect garbage and give freed memory back (CUDA's cache, the C heap), so the next base is low."""
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
        else:
            _malloc_trim()

    def base(self) -> int | None:
        """Bytes in use now, after freeing: allocated on the GPU, resident on CPU (None: unknown)."""
        self.free()
        if self.cuda:
            return self.torch.cuda.memory_allocated()
        kib = _status_kib("VmRSS")
        return None if kib is None else kib * 1024

    def reset(self) -> None:
        """Start a new peak at the current usage."""
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
        else:
            _reset_peak_rss()

    def peak(self, base: int | None) -> float | None:
        """MiB of the peak since `reset` above `base`; None where not measurable."""
        if base is None or self.metric is None:
            return None
        if self.cuda:
            peak = self.torch.cuda.max_memory_allocated()
        else:
            kib = _status_kib("VmHWM")
            if kib is None:
                return None
            peak = kib * 1024
        return max(0, peak - base) / 2**20
