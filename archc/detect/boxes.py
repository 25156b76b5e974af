"""Boxes as (x1, y1, x2, y2) float pixels (width = x2 - x1): areas, IoU, clipping, and the box coder.

The coder is the R-CNN parameterisation (Girshick et al.; used by Faster R-CNN and the paper's appendix):

    dx = wx * (gx - ax) / aw      dy = wy * (gy - ay) / ah      (centres)
    dw = ww * log(gw / aw)        dh = wh * log(gh / ah)        (sizes)

decode inverts it; dw/dh are clamped first so that exp() cannot overflow on a wild prediction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """Areas of boxes, 0 for degenerate (zero or negative width/height) ones.

    Args:
        boxes: [N,4] (x1, y1, x2, y2).

    Returns:
        [N] areas.
    """
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of every pair of boxes, inter / (area_a + area_b - inter).

    Args:
        a: [N,4] boxes.
        b: [M,4] boxes (either may be empty).

    Returns:
        [N,M] IoUs; 0 where the union is empty (two zero-area boxes).
    """
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clip boxes to the image [0, width] x [0, height].

    Args:
        boxes: [...,4] boxes, e.g. [N,4] or class-specific [N,K,4].
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        The clipped boxes, same shape.
    """
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1).reshape(boxes.shape)


def small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Which boxes are too small to keep.

    Args:
        boxes: [N,4] boxes.
        min_size: smallest allowed width and height, in pixels.

    Returns:
        Bool [N]: True where the width or the height is below `min_size`.
    """
    return ((boxes[:, 2] - boxes[:, 0]) < min_size) | ((boxes[:, 3] - boxes[:, 1]) < min_size)


class BoxCoder:
    """Encode boxes as deltas from reference boxes (anchors or proposals) and decode them back.

    Args:
        weights: (wx, wy, ww, wh); (1,1,1,1) for the RPN, (10,10,5,5) for the Fast R-CNN head.
        clamp: the largest dw/dh applied in decode (log(1000/16): a box may grow at most 62.5x).
    """

    def __init__(
        self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0), clamp: float = math.log(1000.0 / 16)
    ) -> None:
        self.weights = weights
        self.clamp = clamp

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets that take each reference box to its box.

        Args:
            boxes: [N,4] target boxes.
            anchors: [N,4] reference boxes (anchors or proposals), of positive width and height.

        Returns:
            [N,4] deltas (dx, dy, dw, dh), multiplied by the weights.
        """
        wx, wy, ww, wh = self.weights
        aw = anchors[:, 2] - anchors[:, 0]
        ah = anchors[:, 3] - anchors[:, 1]
        ax = anchors[:, 0] + 0.5 * aw
        ay = anchors[:, 1] + 0.5 * ah
        gw = boxes[:, 2] - boxes[:, 0]
        gh = boxes[:, 3] - boxes[:, 1]
        gx = boxes[:, 0] + 0.5 * gw
        gy = boxes[:, 1] + 0.5 * gh
        return torch.stack(
            [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], dim=1
        )

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Apply deltas to reference boxes (the inverse of encode; dw, dh clamped at `clamp` first).

        Args:
            deltas: [N,4K] weighted deltas, K boxes per reference box (e.g. one per class).
            anchors: [N,4] reference boxes.

        Returns:
            [N,4K] boxes in the deltas' dtype.
        """
        wx, wy, ww, wh = self.weights
        anchors = anchors.to(deltas.dtype)
        aw = (anchors[:, 2] - anchors[:, 0])[:, None]
        ah = (anchors[:, 3] - anchors[:, 1])[:, None]
        ax = anchors[:, 0:1] + 0.5 * aw
        ay = anchors[:, 1:2] + 0.5 * ah
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.clamp)
        cx = dx * aw + ax
        cy = dy * ah + ay
        w = torch.exp(dw) * aw
        h = torch.exp(dh) * ah
        out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=2)
        return out.reshape(deltas.shape)
