"""Greedy non-maximum suppression, alone and per group (class), in plain torch.

Greedy NMS keeps the highest-scoring box, drops every box overlapping it by more than the threshold, and
repeats. The loop runs only over kept boxes, each step one vectorised IoU against the boxes after it, so
12,000 RPN proposals take a few tens of milliseconds on a CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from archc.detect.boxes import box_area


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices of the boxes greedy NMS keeps, in decreasing score order (ties: lower index first).

    Args:
        boxes: [N,4] (x1, y1, x2, y2).
        scores: [N].
        iou_threshold: boxes overlapping a kept one by more than this are dropped.

    Returns:
        LongTensor [K].
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order].detach()
    areas = box_area(b)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    n = len(order)
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        if i + 1 == n:
            break
        rest = b[i + 1 :]
        lt = torch.maximum(b[i, :2], rest[:, :2])
        rb = torch.minimum(b[i, 2:], rest[:, 2:])
        inter = (rb - lt).clamp_min(0).prod(1)
        union = areas[i] + areas[i + 1 :] - inter
        iou = torch.where(union > 0, inter / union.clamp_min(torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))
        suppressed[i + 1 :] |= (iou > iou_threshold).cpu().numpy()
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS separately within each value of `idxs` (e.g. the class); kept indices in decreasing score order.

    Boxes of different groups are moved apart (offset by group x the largest coordinate + 1) so that one NMS
    over all of them never lets one group suppress another.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    span = boxes.max() - torch.minimum(boxes.min(), torch.zeros((), dtype=boxes.dtype, device=boxes.device)) + 1
    shifted = boxes - boxes.min().clamp(max=0) + (idxs.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
