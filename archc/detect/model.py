"""Faster R-CNN C4 (appendix A): the spec's trunk feeds the RPN and the per-RoI head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.detect.config import DetectorConfig
from archc.detect.nms import batched_nms
from archc.detect.roi_heads import RoIHeads
from archc.detect.rpn import RPN


class FasterRCNN(nn.Module):
    """The detector: trunk -> RPN proposals -> RoI pooling -> head -> classes and boxes.

    Args:
        trunk: images [N,3,H,W] -> features [N,C4,H/stride,W/stride] (the spec's part before `cut`).
        head: pooled RoI features -> [K, C5] (the spec's part after `cut`).
        trunk_channels, head_channels: C4 and C5.
        num_classes: foreground classes.
        config: the detector's settings.
        pooled: the RoI feature size (the spec's `cut` size).
    """

    def __init__(
        self,
        trunk: nn.Module,
        head: nn.Module,
        trunk_channels: int,
        head_channels: int,
        num_classes: int,
        config: DetectorConfig,
        pooled: tuple[int, int] = (14, 14),
    ) -> None:
        super().__init__()
        self.config = config
        self.trunk = trunk
        self.rpn = RPN(trunk_channels, config)
        self.roi_heads = RoIHeads(head, head_channels, num_classes, pooled, config)
        self.num_classes = num_classes

    def forward(
        self,
        images: Tensor,
        image_sizes: list[tuple[int, int]] | None = None,
        targets: list[dict[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (training, with targets) or per-image detections {boxes, scores, labels}."""
        sizes = image_sizes or [tuple(images.shape[-2:])] * len(images)
        features = self.trunk(images)
        if isinstance(features, dict):
            features = next(iter(features.values()))
        train = self.training and targets is not None
        proposals, rpn_losses = self.rpn(features, sizes, targets if train else None, generator)
        if train:
            return {**rpn_losses, **self.roi_heads(features, proposals, sizes, targets, generator)}
        return self.roi_heads(features, proposals, sizes)

    @torch.no_grad()
    def detect(self, images: list[Tensor], scales: tuple[int, ...] = ()) -> list[dict[str, Tensor]]:
        """Detections for images of any size; with `scales`, multi-scale testing (appendix B).

        Each image is resized so its shorter side is each scale in turn (padded to the stride), the
        detections are mapped back to the original pixels, merged, and NMS'd per class.
        """
        stride = self.config.stride
        out = []
        for img in images:
            h, w = img.shape[-2:]
            merged = []
            for s in scales or (min(h, w),):
                f = s / min(h, w)
                nh, nw = max(1, round(h * f)), max(1, round(w * f))
                x = (
                    F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False)
                    if f != 1
                    else img[None]
                )
                ph, pw = -(-nh // stride) * stride, -(-nw // stride) * stride
                x = F.pad(x, (0, pw - nw, 0, ph - nh))
                d = self(x, image_sizes=[(nh, nw)])[0]
                merged.append({"boxes": d["boxes"] / f, "scores": d["scores"], "labels": d["labels"]})
            boxes = torch.cat([m["boxes"] for m in merged])
            scores = torch.cat([m["scores"] for m in merged])
            labels = torch.cat([m["labels"] for m in merged])
            if len(merged) > 1:
                keep = batched_nms(boxes, scores, labels, self.config.nms)[: self.config.detections]
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            out.append({"boxes": boxes, "scores": scores, "labels": labels})
        return out
