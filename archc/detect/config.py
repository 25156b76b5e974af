"""Faster R-CNN settings with the paper's and Faster R-CNN's defaults (appendix A, Ren et al. 2015)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from archc.errors import TrainError


@dataclass(frozen=True)
class DetectorConfig:
    """Every knob of the detector.

    Attributes:
        anchor_sizes, anchor_ratios, stride: anchors (3 scales x 3 ratios at stride 16).
        rpn_fg_iou, rpn_bg_iou: anchors with IoU >= fg are positive, < bg negative (plus, for each ground
            truth box, the anchors with its highest IoU).
        rpn_batch, rpn_fg_fraction: anchors sampled per image for the RPN loss (256, half positive).
        rpn_pre_nms_train/test, rpn_nms, rpn_post_nms_train/test: proposals kept before NMS (top-k by
            objectness), the NMS threshold (0.7) and after it (2000 in training, 300 at test).
        rpn_min_size: proposals smaller than this (pixels) are dropped.
        rpn_ignore_crossing: anchors crossing the image border do not count in training (as in the paper).
        roi_batch, roi_fg_fraction, roi_fg_iou, roi_bg_iou: RoIs sampled per image (512, 25% positives with
            IoU >= 0.5, negatives in [0, 0.5)).
        box_weights: the Fast R-CNN box coder's weights.
        pooler: "align" (RoIAlign) or "pool" (RoI max pooling, as in the paper); the pooled size is the
            spec's `cut` size; sampling_ratio for RoIAlign.
        score_threshold, nms, detections: inference (score >= 0.05, per-class NMS 0.5, top 100).
        box_refinement, refine_nms, vote_iou: appendix B box refinement: the head runs again on its
            regressed boxes, both sets are merged, NMS 0.3, and each kept box is replaced by the
            score-weighted mean of the boxes overlapping it by IoU >= 0.5 (box voting).
        global_context: appendix B: the whole image's pooled feature goes through the head and is
            concatenated to every RoI's feature before the sibling layers.
        test_scales: shorter sides for multi-scale testing (empty: single scale).
    """

    anchor_sizes: tuple[int, ...] = (128, 256, 512)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    stride: int = 16
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch: int = 256
    rpn_fg_fraction: float = 0.5
    rpn_pre_nms_train: int = 12000
    rpn_pre_nms_test: int = 6000
    rpn_nms: float = 0.7
    rpn_post_nms_train: int = 2000
    rpn_post_nms_test: int = 300
    rpn_min_size: float = 0.0
    rpn_ignore_crossing: bool = True
    roi_batch: int = 512
    roi_fg_fraction: float = 0.25
    roi_fg_iou: float = 0.5
    roi_bg_iou: float = 0.5
    box_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    pooler: str = "align"
    sampling_ratio: int = 2
    score_threshold: float = 0.05
    nms: float = 0.5
    detections: int = 100
    box_refinement: bool = False
    refine_nms: float = 0.3
    vote_iou: float = 0.5
    global_context: bool = False
    test_scales: tuple[int, ...] = ()

    def replace(self, **values: Any) -> DetectorConfig:
        """A copy with some fields changed; strings (from the CLI or spec parameters) are parsed.

        Raises:
            TrainError: an unknown field or a value that does not parse.
        """
        known = {f.name: f for f in fields(self)}
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise TrainError(f"unknown detector setting '{key}'", hint=f"settings: {', '.join(sorted(known))}")
            out[key] = _parse(key, value, getattr(self, key))
        r = dataclasses.replace(self, **out)
        if r.pooler not in ("align", "pool"):
            raise TrainError(f"pooler must be 'align' or 'pool', not {r.pooler!r}")
        return r


def _parse(key: str, value: Any, current: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if isinstance(current, bool):
            return {"true": True, "false": False, "1": True, "0": False}[text.lower()]
        if isinstance(current, tuple):
            parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
            kind = float if current and isinstance(current[0], float) else int
            return tuple(kind(p) for p in parts)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, int):
            return int(text)
        return text
    except (KeyError, ValueError):
        raise TrainError(f"bad value {value!r} for detector setting '{key}' (now {current!r})") from None
