"""Multi-process training under torchrun: process group, sharding helpers, and a BN synchronised over ranks.

torch's own SyncBatchNorm refuses CPU tensors, so `--sync-bn` uses `DistBatchNorm2d`, which all-reduces
per-channel sums with the autograd-aware collective: with it, N processes on shards of a global batch
compute the same forward, gradients and running statistics as one process on the whole batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from archc.errors import TrainError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, device and collective backend."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Only rank 0 writes metrics and checkpoints and draws progress."""
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun described in the environment (or run alone).

    Args:
        device: "cpu", "cuda" or None (cuda when available).

    Returns:
        A DistInfo; gloo on CPU, NCCL on GPU.

    Raises:
        TrainError: a CUDA device was asked for but none is available.
    """
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda was given but no CUDA device is available", hint="use --device cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=want if want != "cuda" else "cuda:0")
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if want.startswith("cuda") else "gloo"
    if want.startswith("cuda"):
        torch.cuda.set_device(local)
        want = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world=world, local_rank=local, device=want, backend=backend)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all ranks (a no-op alone)."""
    if info.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op alone)."""
    if info.world > 1:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


class DistBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all ranks (CPU and GPU).

    Same parameters, buffers and state_dict keys as nn.BatchNorm2d. Gradients flow through the all-reduce,
    so the input gradient includes the other ranks' terms, as in single-process BN on the whole batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        import warnings

        with warnings.catch_warnings():
            # the autograd-aware collective is marked deprecated, its replacement has no backward yet
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        # sums in float64: E[x^2] - mean^2 loses too many digits in float32 for the result to match
        # single-process BN's two-pass variance
        xd = x.double()
        local_n = torch.tensor([x.numel() / c], dtype=torch.float64, device=x.device)
        stats = torch.cat([xd.sum(dim=(0, 2, 3)), (xd * xd).sum(dim=(0, 2, 3)), local_n])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(stats)
        n = stats[2 * c]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.num_batches_tracked.add_(1)
                unbiased = var * (n / (n - 1)) if n > 1 else var
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        inv = torch.rsqrt(var + self.eps).to(x.dtype)
        mean = mean.to(x.dtype)
        y = (x - mean[None, :, None, None]) * inv[None, :, None, None]
        if self.weight is not None:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_bn(module: nn.Module) -> int:
    """Make every plain nn.BatchNorm2d in `module` a DistBatchNorm2d in place; returns how many.

    Raises:
        TrainError: the module normalises with something other than nn.BatchNorm2d (e.g. a fused kernel).
    """
    count = 0
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = DistBatchNorm2d
            count += 1
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, DistBatchNorm2d):
            raise TrainError(
                f"--sync-bn cannot synchronise a {type(m).__name__}",
                hint="use the torch backend for --sync-bn",
            )
    return count


__all__ = ["DistBatchNorm2d", "DistInfo", "all_reduce_sum", "barrier", "convert_sync_bn", "init_distributed"]
