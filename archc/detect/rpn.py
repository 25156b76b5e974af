"""The region proposal network: a 3x3 conv and two sibling 1x1 convs on the trunk's feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.detect.anchors import AnchorGenerator
from archc.detect.boxes import BoxCoder, box_iou, clip_boxes, small_boxes
from archc.detect.config import DetectorConfig
from archc.detect.nms import nms
from archc.detect.sampling import match, sample


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then objectness (A logits) and box deltas (4A) per position."""

    def __init__(self, channels: int, anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(channels, anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, 4 * anchors, 1)
        for m in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.conv(x))
        return self.cls_logits(h), self.bbox_pred(h)


class RPN(nn.Module):
    """Proposals from anchors; in training also the RPN losses (objectness BCE, smooth-L1 boxes).

    Args:
        channels: channels of the trunk's feature map.
        cfg: anchors, labelling, sampling and proposal settings.
    """

    def __init__(self, channels: int, cfg: DetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.anchors = AnchorGenerator(cfg.anchor_sizes, cfg.anchor_ratios, cfg.stride)
        self.head = RPNHead(channels, self.anchors.num_anchors)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))

    def forward(
        self,
        features: Tensor,
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        n, _, h, w = features.shape
        logits, deltas = self.head(features)
        a = self.anchors.num_anchors
        logits = logits.permute(0, 2, 3, 1).reshape(n, -1)
        deltas = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        anchors = self.anchors(h, w, features.device, features.dtype)
        proposals = self._proposals(logits.detach(), deltas.detach(), anchors, image_sizes)
        losses: dict[str, Tensor] = {}
        if targets is not None:
            losses = self._losses(logits, deltas, anchors, image_sizes, targets, generator)
        return proposals, losses

    def _proposals(self, logits: Tensor, deltas: Tensor, anchors: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
        cfg = self.cfg
        pre = cfg.rpn_pre_nms_train if self.training else cfg.rpn_pre_nms_test
        post = cfg.rpn_post_nms_train if self.training else cfg.rpn_post_nms_test
        out = []
        for i, (ih, iw) in enumerate(sizes):
            scores, top = logits[i].topk(min(pre, logits.shape[1]))
            boxes = clip_boxes(self.coder.decode(deltas[i, top], anchors[top]), ih, iw)
            keep = ~small_boxes(boxes, max(cfg.rpn_min_size, 1e-3))
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, cfg.rpn_nms)[:post]
            out.append(boxes[keep])
        return out

    def _losses(self, logits, deltas, anchors, sizes, targets, generator) -> dict[str, Tensor]:  # noqa: ANN001
        cfg = self.cfg
        cls_losses, box_losses, count = [], [], 0
        for i, ((ih, iw), t) in enumerate(zip(sizes, targets, strict=True)):
            gt = t["boxes"].to(anchors.dtype)
            idx, labels = match(box_iou(gt, anchors), cfg.rpn_fg_iou, cfg.rpn_bg_iou, best_per_gt=True)
            if cfg.rpn_ignore_crossing:
                inside = (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= iw) & (anchors[:, 3] <= ih)
                labels[~inside] = -1
            if len(gt) == 0:
                labels[labels == 1] = 0
            pos, neg = sample(labels, cfg.rpn_batch, cfg.rpn_fg_fraction, generator)
            chosen = torch.cat([pos, neg])
            target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(logits.dtype)
            cls_losses.append(F.binary_cross_entropy_with_logits(logits[i, chosen], target, reduction="sum"))
            if len(pos):
                goal = self.coder.encode(gt[idx[pos]], anchors[pos])
                box_losses.append(F.smooth_l1_loss(deltas[i, pos], goal, beta=1 / 9, reduction="sum"))
            count += len(chosen)
        norm = max(count, 1)
        zero = logits.sum() * 0
        return {
            "loss_rpn_cls": sum(cls_losses, zero) / norm,
            "loss_rpn_box": sum(box_losses, zero) / norm,
        }
