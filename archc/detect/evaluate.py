"""COCO evaluation through pycocotools: mAP@[.5:.95], mAP@.5 and per-class AP."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import torch

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_evaluate(dataset: Any, detections: dict[int, dict[str, torch.Tensor]]) -> dict[str, Any]:
    """COCO metrics of `detections` (image id -> boxes xyxy, scores, labels) on a CocoDetection set.

    Returns:
        {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class": {name: {"AP", "AP50"}}}; zeros without
        detections.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = []
    for image_id, d in detections.items():
        for box, score, label in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True):
            x1, y1, x2, y2 = box
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": dataset.label_to_cat[int(label)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    zero = {k: 0.0 for k in KEYS} | {"per_class": {n: {"AP": 0.0, "AP50": 0.0} for n in dataset.class_names}}
    if not results:
        return zero
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset.raw)
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out: dict[str, Any] = {k: float(max(ev.stats[i], 0.0)) for i, k in enumerate(KEYS)}
    # precision: [T iou thresholds, R recall points, K classes, A areas, M max-dets]; area "all", 100 dets
    prec = ev.eval["precision"]
    per = {}
    for k, cat in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        name = dataset.class_names[dataset.cat_to_label[cat] - 1]
        per[name] = {
            "AP": float(np.mean(p[p > -1])) if (p > -1).any() else 0.0,
            "AP50": float(np.mean(p[0][p[0] > -1])) if (p[0] > -1).any() else 0.0,
        }
    out["per_class"] = per
    return out


def format_table(metrics: dict[str, Any], title: str = "") -> Any:
    """A rich Table of the metrics and per-class AP."""
    from rich.table import Table

    t = Table(title=title or None, title_justify="left")
    t.add_column("class")
    t.add_column("AP@[.5,.95]", justify="right")
    t.add_column("AP@.5", justify="right")
    for name, v in metrics.get("per_class", {}).items():
        t.add_row(name, f"{100 * v['AP']:.1f}", f"{100 * v['AP50']:.1f}")
    t.add_row(
        "[bold]all[/bold]", f"[bold]{100 * metrics['AP']:.1f}[/bold]", f"[bold]{100 * metrics['AP50']:.1f}[/bold]"
    )
    return t
