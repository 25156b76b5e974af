"""COCO evaluation through pycocotools: mAP@[.5:.95], mAP@.5, mAP@.75, by object size and per class."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch

from archc.errors import DataError

# the order of COCOeval.stats' first six entries
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# pycocotools' object-size ranges (areaRng, px^2) of the size-bucket metrics
SIZE_RANGES = {"APs": (0, 32**2), "APm": (32**2, 96**2), "APl": (96**2, 1e10)}


def coco_evaluate(
    dataset: Any, detections: dict[int, dict[str, torch.Tensor]], *, verbose: bool = False
) -> dict[str, Any]:
    """COCO bbox metrics of `detections` on a CocoDetection set, computed by pycocotools.

    The ground truth is the set's JSON (crowd regions included, so that detections on them are ignored as
    COCO does). Images without an entry in `detections` count as images where nothing was found. A
    size bucket (APs, APm, APl) that holds no ground truth (pycocotools' -1) has no value: None.

    Args:
        dataset: a `archc.data.coco.CocoDetection`.
        detections: image id -> {"boxes": [N,4] (x1, y1, x2, y2) in original pixels, "scores": [N],
            "labels": [N] in 1..K}.
        verbose: let pycocotools print its progress and summary (otherwise it is captured).

    Returns:
        {"AP", "AP50", "AP75", "APs", "APm", "APl": floats in [0,1] (None: an empty size bucket),
        "per_class": {class name: {"AP", "AP50"}}}; per_class lists the classes with ground-truth objects
        in the set. All zeros (or None) without detections.

    Raises:
        DataError: a detection for an image id or label the set does not have.
    """
    results = _results(dataset, detections)
    gt_data = dataset.ground_truth()
    present = {a["category_id"] for a in gt_data["annotations"] if not a["iscrowd"]}
    names = {c["id"]: c["name"] for c in gt_data["categories"]}
    if not results:
        # pycocotools cannot load an empty result list; with nothing found every AP is 0
        areas = [a["area"] for a in gt_data["annotations"] if not a["iscrowd"]]
        out = {k: 0.0 for k in KEYS}
        for k, (lo, hi) in SIZE_RANGES.items():
            out[k] = 0.0 if any(lo <= area <= hi for area in areas) else None
        return out | {"per_class": {names[c]: {"AP": 0.0, "AP50": 0.0} for c in sorted(present)}}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        gt = COCO()
        gt.dataset = gt_data
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out: dict[str, Any] = {
        k: None if k in SIZE_RANGES and ev.stats[i] < 0 else float(max(ev.stats[i], 0.0)) for i, k in enumerate(KEYS)
    }
    # precision is [IoU thresholds, recall points, classes, area ranges, max-dets]; area "all", 100 dets;
    # -1 marks a class without ground truth
    prec = ev.eval["precision"]
    per = {}
    for k, cat in enumerate(ev.params.catIds):
        if cat not in present:
            continue
        p = prec[:, :, k, 0, -1]
        per[names[cat]] = {
            "AP": float(np.mean(p[p > -1])) if (p > -1).any() else 0.0,
            "AP50": float(np.mean(p[0][p[0] > -1])) if (p[0] > -1).any() else 0.0,
        }
    out["per_class"] = per
    return out


def _results(dataset: Any, detections: dict[int, dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """Detections as COCO result entries ([x, y, w, h] boxes, category ids)."""
    image_ids = {im["id"] for im in dataset.images}
    results = []
    for image_id, d in detections.items():
        if int(image_id) not in image_ids:
            raise DataError(
                f"detections for image id {image_id}, which {dataset.annotations} does not have",
                hint="key the detections by the targets' image_id",
            )
        boxes = torch.as_tensor(d["boxes"]).detach().cpu().reshape(-1, 4).tolist()
        scores = torch.as_tensor(d["scores"]).detach().cpu().reshape(-1).tolist()
        labels = torch.as_tensor(d["labels"]).detach().cpu().reshape(-1).tolist()
        if not len(boxes) == len(scores) == len(labels):
            raise DataError(
                f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels",
                hint="one score and one label per box",
            )
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels, strict=True):
            if int(label) not in dataset.label_to_cat_id:
                raise DataError(
                    f"image {image_id}: label {label} is not one of the set's labels 1..{len(dataset.class_names)}",
                    hint="labels count foreground classes from 1; 0 is background",
                )
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": dataset.label_to_cat_id[int(label)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return results


def format_table(metrics: dict[str, Any], title: str = "") -> Any:
    """A rich Table of the per-class and overall AP, in percent.

    Args:
        metrics: what `coco_evaluate` returns.
        title: shown above the table.

    Returns:
        A `rich.table.Table`: a row per class and an "all" row; AP75 and AP by object size in its caption.
    """
    from rich.markup import escape
    from rich.table import Table

    # an empty size bucket has no AP: n/a, not 0.0
    extra = [f"{k} {'n/a' if metrics[k] is None else f'{100 * metrics[k]:.1f}'}" for k in KEYS[2:] if k in metrics]
    # two per line: the table is narrow, and rich would break a long caption mid-pair
    caption = "\n".join("  ".join(extra[i : i + 2]) for i in range(0, len(extra), 2))
    t = Table(title=title or None, title_justify="left", caption=caption or None, caption_justify="left")
    t.add_column("class")
    t.add_column("AP@[.5,.95]", justify="right")
    t.add_column("AP@.5", justify="right")
    for name, v in metrics.get("per_class", {}).items():
        t.add_row(escape(name), f"{100 * v['AP']:.1f}", f"{100 * v['AP50']:.1f}")
    t.add_row(
        "[bold]all[/bold]", f"[bold]{100 * metrics['AP']:.1f}[/bold]", f"[bold]{100 * metrics['AP50']:.1f}[/bold]"
    )
    return t
