"""The Fast R-CNN head of the C4 detector: pool each RoI, run the spec's conv5_x head, classify and regress.

Appendix B options live here too: box refinement with box voting, and global context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.detect.boxes import BoxCoder, box_iou, clip_boxes, small_boxes
from archc.detect.config import DetectorConfig
from archc.detect.nms import batched_nms
from archc.detect.roi_ops import roi_align, roi_pool
from archc.detect.sampling import match, sample


class RoIHeads(nn.Module):
    """Per-RoI head with sibling classification and class-specific box layers.

    Args:
        head: the spec's per-RoI part (pooled features [K, C, h, w] -> [K, C5] or [K, C5, 1, 1]).
        head_channels: C5.
        num_classes: foreground classes (the classifier adds a background class 0).
        pooled: the RoI feature size (the spec's `cut` size).
        cfg: sampling, pooling, inference and appendix-B settings.
    """

    def __init__(
        self, head: nn.Module, head_channels: int, num_classes: int, pooled: tuple[int, int], cfg: DetectorConfig
    ) -> None:
        super().__init__()
        self.head = head
        self.cfg = cfg
        self.num_classes = num_classes
        self.pooled = pooled
        feat = head_channels * (2 if cfg.global_context else 1)
        self.cls_score = nn.Linear(feat, num_classes + 1)
        self.bbox_pred = nn.Linear(feat, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.coder = BoxCoder(tuple(cfg.box_weights))  # type: ignore[arg-type]

    def _pool(self, features: Tensor, rois: Tensor) -> Tensor:
        scale = 1.0 / self.cfg.stride
        if self.cfg.pooler == "pool":
            return roi_pool(features, rois, self.pooled, scale)
        return roi_align(features, rois, self.pooled, scale, self.cfg.sampling_ratio, aligned=True)

    def _features(self, features: Tensor, boxes: list[Tensor], sizes: list[tuple[int, int]]) -> Tensor:
        rois = torch.cat(
            [torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device), b], 1) for i, b in enumerate(boxes)]
        )
        x = self.head(self._pool(features, rois)).flatten(1)
        if self.cfg.global_context:
            whole = torch.tensor([[i, 0, 0, w, h] for i, (h, w) in enumerate(sizes)], dtype=x.dtype, device=x.device)
            ctx = self.head(self._pool(features, whole)).flatten(1)
            counts = torch.tensor([len(b) for b in boxes], device=x.device)
            x = torch.cat([x, ctx.repeat_interleave(counts, dim=0)], dim=1)
        return x

    def forward(
        self,
        features: Tensor,
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if targets is not None:
            return self._losses(features, proposals, image_sizes, targets, generator)
        return self._detect(features, proposals, image_sizes)

    def _losses(self, features, proposals, sizes, targets, generator) -> dict[str, Tensor]:  # noqa: ANN001
        cfg = self.cfg
        boxes, labels, goals = [], [], []
        for p, t in zip(proposals, targets, strict=True):
            gt = t["boxes"].to(p.dtype)
            cand = torch.cat([p, gt])  # the ground truth is always among the RoIs
            idx, lab = match(box_iou(gt, cand), cfg.roi_fg_iou, cfg.roi_bg_iou, best_per_gt=False)
            pos, neg = sample(lab, cfg.roi_batch, cfg.roi_fg_fraction, generator)
            chosen = torch.cat([pos, neg])
            cls = torch.zeros(len(chosen), dtype=torch.long, device=p.device)
            if len(gt):
                cls[: len(pos)] = t["labels"][idx[pos]]
                goals.append(self.coder.encode(gt[idx[pos]], cand[pos]))
            boxes.append(cand[chosen])
            labels.append(cls)
        x = self._features(features, boxes, sizes)
        scores, deltas = self.cls_score(x), self.bbox_pred(x)
        labels_all = torch.cat(labels)
        n = max(len(labels_all), 1)
        loss_cls = F.cross_entropy(scores, labels_all, reduction="sum") / n
        fg = (labels_all > 0).nonzero().flatten()
        if len(fg):
            d = deltas.view(len(labels_all), -1, 4)[fg, labels_all[fg]]
            loss_box = F.smooth_l1_loss(d, torch.cat(goals), beta=1.0, reduction="sum") / n
        else:
            loss_box = deltas.sum() * 0
        return {"loss_cls": loss_cls, "loss_box": loss_box}

    def _predict(self, features: Tensor, boxes: list[Tensor], sizes: list[tuple[int, int]]):  # noqa: ANN202
        """Class probabilities [K, C+1] and class-specific boxes [K, C+1, 4] for every box of every image."""
        x = self._features(features, boxes, sizes)
        probs = self.cls_score(x).softmax(1)
        ref = torch.cat(boxes)
        decoded = self.coder.decode(self.bbox_pred(x), ref).view(len(ref), -1, 4)
        return probs, decoded

    def _detect(self, features: Tensor, proposals: list[Tensor], sizes: list[tuple[int, int]]) -> list[dict]:
        cfg = self.cfg
        probs, decoded = self._predict(features, proposals, sizes)
        counts = [len(p) for p in proposals]
        if cfg.box_refinement:
            # appendix B: regress each RoI to its most likely class's box and run the head again there
            best = probs[:, 1:].argmax(1) + 1
            refined = decoded[torch.arange(len(best)), best]
            refined = [clip_boxes(r, h, w) for r, (h, w) in zip(refined.split(counts), sizes, strict=True)]
            probs2, decoded2 = self._predict(features, refined, sizes)
        out = []
        start = 0
        for i, (h, w) in enumerate(sizes):
            sl = slice(start, start + counts[i])
            start += counts[i]
            p, b = probs[sl], clip_boxes(decoded[sl], h, w)
            if cfg.box_refinement:
                p = torch.cat([p, probs2[sl]])
                b = torch.cat([b, clip_boxes(decoded2[sl], h, w)])
            out.append(self._select(p, b))
        return out

    def _select(self, probs: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        """Score threshold, per-class NMS (and box voting), top-N."""
        cfg = self.cfg
        k = probs.shape[1] - 1
        scores = probs[:, 1:].reshape(-1)
        labels = torch.arange(1, k + 1, device=probs.device).repeat(len(probs))
        cand = boxes[:, 1:].reshape(-1, 4)
        keep = (scores >= cfg.score_threshold) & ~small_boxes(cand, 1e-2)
        cand, scores, labels = cand[keep], scores[keep], labels[keep]
        thr = cfg.refine_nms if cfg.box_refinement else cfg.nms
        kept = batched_nms(cand, scores, labels, thr)[: cfg.detections]
        result = cand[kept]
        if cfg.box_refinement and len(kept):
            result = vote(result, labels[kept], cand, scores, labels, cfg.vote_iou)
        return {"boxes": result, "scores": scores[kept], "labels": labels[kept]}


def vote(kept: Tensor, kept_labels: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor, iou: float) -> Tensor:
    """Box voting: each kept box becomes the score-weighted mean of same-class boxes overlapping it by >= iou."""
    overlap = box_iou(kept, boxes) >= iou
    overlap &= kept_labels[:, None] == labels[None, :]
    w = overlap.to(scores.dtype) * scores[None, :]
    return (w @ boxes) / w.sum(1, keepdim=True).clamp_min(1e-12)
