"""Labelling anchors/RoIs by IoU with the ground truth, and balanced positive/negative sampling."""

from __future__ import annotations

import torch
from torch import Tensor


def match(iou: Tensor, fg: float, bg: float, best_per_gt: bool) -> tuple[Tensor, Tensor]:
    """Label each column (anchor or RoI) of a [G, A] IoU matrix.

    Args:
        iou: IoU of every ground-truth box (rows) with every candidate (columns).
        fg: candidates with max IoU >= fg are positive (1).
        bg: candidates with max IoU < bg are negative (0); those in between are ignored (-1).
        best_per_gt: also make positive, for each ground-truth box, the candidates with its highest IoU
            (so that every object gets an anchor, as in Faster R-CNN).

    Returns:
        (index of the best ground-truth box per candidate [A], labels [A] in {1, 0, -1}).
    """
    a = iou.shape[1]
    if iou.shape[0] == 0:
        return torch.zeros(a, dtype=torch.long, device=iou.device), torch.zeros(a, dtype=torch.long, device=iou.device)
    best, idx = iou.max(dim=0)
    labels = torch.full((a,), -1, dtype=torch.long, device=iou.device)
    labels[best < bg] = 0
    labels[best >= fg] = 1
    if best_per_gt:
        top = iou.max(dim=1, keepdim=True).values
        hit = ((iou == top) & (top > 0)).any(dim=0)
        labels[hit] = 1
    return idx, labels


def sample(labels: Tensor, batch: int, fg_fraction: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Pick up to `batch` candidates, at most `fg_fraction` of them positive, the rest negative.

    Returns:
        (indices of the sampled positives, indices of the sampled negatives).
    """
    pos = (labels == 1).nonzero().flatten()
    neg = (labels == 0).nonzero().flatten()
    n_pos = min(len(pos), int(batch * fg_fraction))
    n_neg = min(len(neg), batch - n_pos)
    pos = pos[torch.randperm(len(pos), generator=generator)[:n_pos].to(pos.device)]
    neg = neg[torch.randperm(len(neg), generator=generator)[:n_neg].to(neg.device)]
    return pos, neg
