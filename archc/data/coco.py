"""COCO-format detection data (`--data coco:IMAGES,ANNOTATIONS`, or the generated `shapes`) and its batches."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch
import torch.nn.functional as F

from archc.errors import DataError

DEFAULT_SHAPES = (600, 100)


class CocoDetection:
    """Images and boxes from a COCO JSON file.

    Category ids map to contiguous labels 1..K in id order (0 is background). Crowd boxes are left out of
    the training targets (they stay in `ground_truth()`, where COCO evaluation ignores detections on them);
    boxes are clipped to their image and dropped when nothing is left of them.

    Args:
        images_dir: where the `file_name`s are.
        annotations_json: the COCO JSON file.

    Raises:
        DataError: a missing or invalid file, an unknown category or image id, a bad box.
    """

    def __init__(self, images_dir: Path, annotations_json: Path) -> None:
        self.images_dir, self.annotations = Path(images_dir), Path(annotations_json)
        where = str(self.annotations)
        if not self.annotations.is_file():
            raise DataError(f"annotations not found: {where}", hint="give coco:IMAGES_DIR,ANNOTATIONS.json")
        if not self.images_dir.is_dir():
            raise DataError(f"image folder not found: {self.images_dir}", hint=f"the folder of {where}'s images")
        try:
            data = json.loads(self.annotations.read_text())
            cats = sorted(({"id": int(c["id"]), "name": str(c["name"])} for c in data["categories"]), key=_id)
            self.images = sorted(
                ({"id": int(im["id"]), "file_name": str(im["file_name"]), **_dims(im)} for im in data["images"]),
                key=_id,
            )
            anns = list(data["annotations"])
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise DataError(
                f"{where} is not COCO detection JSON ({type(exc).__name__}: {exc})",
                hint="it needs 'images' (id, file_name), 'annotations' and 'categories' (id, name)",
            ) from None
        for im in self.images:
            _check_file_name(im["file_name"], where)
        if not cats:
            raise DataError(f"{where} has no categories", hint="list the classes under 'categories'")
        if len({c["id"] for c in cats}) != len(cats) or len({im["id"] for im in self.images}) != len(self.images):
            raise DataError(f"{where} repeats a category or image id", hint="ids must be unique")
        self.categories = cats
        self.class_names = [c["name"] for c in cats]
        self.cat_to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
        self.label_to_cat_id = {v: k for k, v in self.cat_to_label.items()}
        by_id = {im["id"]: im for im in self.images}
        self.boxes: dict[int, list[tuple[list[float], int]]] = {i: [] for i in by_id}
        self._gt: list[dict[str, Any]] = []
        for a in anns:
            ann = _annotation(a, where, self.cat_to_label, by_id)
            self._gt.append(ann)
            if ann["iscrowd"]:
                continue
            im = by_id[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            x1, y1, x2, y2 = x, y, x + w, y + h
            if "width" in im:
                x1, x2 = min(max(x1, 0.0), im["width"]), min(max(x2, 0.0), im["width"])
                y1, y2 = min(max(y1, 0.0), im["height"]), min(max(y2, 0.0), im["height"])
            if x2 > x1 and y2 > y1:
                self.boxes[ann["image_id"]].append(([x1, y1, x2, y2], self.cat_to_label[ann["category_id"]]))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Image `i` (in image-id order).

        Returns:
            (uint8 image [3,H,W], {"boxes": float [G,4] xyxy, "labels": int64 [G] in 1..K, "image_id": int}).

        Raises:
            DataError: the image file is missing, unreadable or not the size the JSON says.
        """
        import numpy as np

        from archc.data.folder import open_rgb

        im = self.images[i]
        path = self.images_dir / im["file_name"]
        pic = open_rgb(path, hint=f"{self.annotations} names it; check the image folder")
        arr = np.asarray(pic, dtype=np.uint8).copy()
        if "width" in im and arr.shape[:2] != (im["height"], im["width"]):
            raise DataError(
                f"image {path} is {arr.shape[1]}x{arr.shape[0]}, {self.annotations} says {im['width']}x{im['height']}",
                hint="the boxes would not fit the picture: fix the JSON or the file",
            )
        objs = self.boxes[im["id"]]
        boxes = torch.tensor([b for b, _ in objs], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([c for _, c in objs], dtype=torch.long)
        return torch.from_numpy(arr).permute(2, 0, 1), {"boxes": boxes, "labels": labels, "image_id": im["id"]}

    def ground_truth(self) -> dict[str, Any]:
        """The set as a COCO dict for pycocotools: every annotation (crowd ones too), no segmentations.

        Annotation ids are renumbered 1..n: pycocotools indexes by them, and a file's may be missing.
        """
        return {
            "images": [dict(im) for im in self.images],
            "annotations": [dict(a, id=k + 1, bbox=list(a["bbox"])) for k, a in enumerate(self._gt)],
            "categories": [dict(c) for c in self.categories],
        }


def _id(entry: dict[str, Any]) -> int:
    return entry["id"]


def _dims(im: dict[str, Any]) -> dict[str, int]:
    """An image entry's width and height when the JSON gives them (COCO always does)."""
    if "width" in im and "height" in im:
        return {"width": int(im["width"]), "height": int(im["height"])}
    return {}


def _check_file_name(name: str, where: str) -> None:
    """Refuse a `file_name` that is not a path inside the image folder (absolute, a drive, or with '..')."""
    parts = PurePosixPath(name.replace("\\", "/"))
    if not name or parts.is_absolute() or ".." in parts.parts or PureWindowsPath(name).drive or "\x00" in name:
        raise DataError(
            f"{where}: image file_name {name!r} points outside the image folder",
            hint="a file_name is a path relative to the image folder, without '..'",
        )


def _annotation(a: Any, where: str, cat_to_label: dict[int, int], images: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One checked annotation with the fields evaluation needs (area and iscrowd filled in when absent)."""
    try:
        ann_id, cat, image_id = a.get("id"), int(a["category_id"]), int(a["image_id"])
        bbox = [float(v) for v in a["bbox"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(
            f"{where}: annotation {a.get('id') if isinstance(a, dict) else a!r} is malformed ({exc})",
            hint="an annotation needs image_id, category_id and bbox [x, y, w, h]",
        ) from None
    if cat not in cat_to_label:
        raise DataError(
            f"{where}: annotation {ann_id} has unknown category {cat}",
            hint=f"the categories are {sorted(cat_to_label)}",
        )
    if image_id not in images:
        raise DataError(f"{where}: annotation {ann_id} names unknown image {image_id}", hint="add it to 'images'")
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox) or bbox[2] < 0 or bbox[3] < 0:
        raise DataError(
            f"{where}: annotation {ann_id} has a bad bbox {a['bbox']}",
            hint="COCO boxes are [x, y, width, height] with finite numbers and width, height >= 0",
        )
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": bbox,
        "area": float(a.get("area", bbox[2] * bbox[3])),
        "iscrowd": int(bool(a.get("iscrowd", 0))),
    }


@dataclass
class DetectionData:
    """Train and test sets of a detection data set (`name` is the data string it was opened from)."""

    name: str
    train: CocoDetection
    test: CocoDetection

    @property
    def num_classes(self) -> int:
        """Foreground classes."""
        return len(self.train.class_names)

    @property
    def class_names(self) -> list[str]:
        """Names of labels 1..K."""
        return self.train.class_names


def open_detection_data(spec: str, *, root: Path | None = None) -> DetectionData:
    """Open a detection data set from its command-line string.

    The forms:

    * `shapes`: the generated shapes, 600 training and 100 test images (seed 0, 128x128);
    * `shapes:N_TRAIN,N_TEST`: as many as that;
    * `coco:IMAGES_DIR,ANNOTATIONS.json`: one COCO set, used for training and for testing;
    * `coco:TRAIN_IMAGES,TRAIN.json;TEST_IMAGES,TEST.json`: a training and a test set (the same categories).

    Paths may not contain `,` or `;`.

    Args:
        spec: the string.
        root: where generated data is cached: `root/shapes-N_TRAIN-N_TEST` (default root: runs/data).

    Returns:
        The train and test sets.

    Raises:
        DataError: an unknown form, bad numbers, unreadable files, train and test sets with other classes.
    """
    from archc.data.shapes import ensure_shapes

    kind, _, arg = spec.partition(":")
    if kind == "shapes":
        try:
            n_train, n_test = (int(v) for v in arg.split(",")) if arg else DEFAULT_SHAPES
        except ValueError:
            raise DataError(
                f"shapes:N_TRAIN,N_TEST needs two numbers, got {arg!r}", hint="e.g. --data shapes:600,100"
            ) from None
        if n_train < 1 or n_test < 1:
            raise DataError(f"shapes needs at least one training and one test image, got {arg!r}")
        base = (Path("runs") / "data" if root is None else Path(root)) / f"shapes-{n_train}-{n_test}"
        tr, te = ensure_shapes(base, train=n_train, test=n_test, seed=0)
        return DetectionData(spec, CocoDetection(tr.parent, tr), CocoDetection(te.parent, te))
    if kind == "coco" and arg:
        pairs = arg.split(";")
        if len(pairs) > 2:
            raise DataError(f"coco: takes one or two IMAGES,ANNOTATIONS pairs, got {len(pairs)}", hint=_COCO_HINT)
        sets = []
        for pair in pairs:
            images, sep, ann = pair.partition(",")
            if not sep or not images.strip() or not ann.strip() or "," in ann:
                raise DataError(f"coco: needs IMAGES_DIR,ANNOTATIONS.json, got {pair!r}", hint=_COCO_HINT)
            sets.append(CocoDetection(Path(images.strip()), Path(ann.strip())))
        train, test = sets[0], sets[-1]
        if train.categories != test.categories:
            raise DataError(
                f"the test set {test.annotations} has other categories than the training set {train.annotations}",
                hint="both need the same 'categories' (ids and names)",
            )
        return DetectionData(spec, train, test)
    raise DataError(f"unknown detection data {spec!r}", hint="use shapes, shapes:N_TRAIN,N_TEST or " + _COCO_HINT)


_COCO_HINT = "coco:IMAGES,ANN.json or coco:TRAIN_IMAGES,TRAIN.json;TEST_IMAGES,TEST.json"


def detection_batches(
    dataset: CocoDetection,
    indices: list[int],
    *,
    min_size: int | None,
    max_size: int | None,
    flip: bool,
    generator: torch.Generator,
    mean: torch.Tensor,
    std: torch.Tensor | None = None,
    stride: int = 16,
) -> tuple[torch.Tensor, list[tuple[int, int]], list[dict[str, Any]], list[float]]:
    """A batch of images and targets for the detector.

    Each image is resized (bilinear) so that its shorter side is `min_size` unless its longer side would
    then pass `max_size` (then the longer side is `max_size`), flipped left-right at random, scaled to
    [0,1], normalised by `mean` and `std`, and zero-padded at the bottom and right to a common size
    divisible by `stride`. Boxes are scaled and flipped with their image.

    Args:
        dataset: the images.
        indices: which ones.
        min_size: target shorter side (None: keep the size).
        max_size: cap on the longer side (None: no cap).
        flip: flip each image with probability 1/2.
        generator: draws the flips (one number per image, so the batch is a function of its state).
        mean: per-channel mean in [0,1], [3].
        std: per-channel standard deviation, [3] (None: 1).
        stride: the padded size is a multiple of it (the backbone's stride).

    Returns:
        (images [N,3,H,W], (h, w) of each image before padding, targets with boxes in those pixels,
        scale factors from the original pixels).

    Raises:
        DataError: no indices, or an unreadable image.
    """
    if not indices:
        raise DataError(f"an empty batch from {dataset.annotations}", hint="the data set needs images")
    flips = torch.rand(len(indices), generator=generator) < 0.5
    imgs, sizes, targets, scales = [], [], [], []
    for k, i in enumerate(indices):
        img, t = dataset[i]
        h, w = img.shape[-2:]
        f = 1.0
        if min_size:
            f = min_size / min(h, w)
            if max_size and max(h, w) * f > max_size:
                f = max_size / max(h, w)
        x = img.float().div(255)
        boxes = t["boxes"].clone()
        if f != 1.0:
            nh, nw = max(1, round(h * f)), max(1, round(w * f))
            x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            # the pixel grid, not f, says where a box edge lands after rounding the size
            boxes *= torch.tensor([nw / w, nh / h, nw / w, nh / h])
        if flip and flips[k]:
            x = x.flip(-1)
            boxes = torch.stack([x.shape[-1] - boxes[:, 2], boxes[:, 1], x.shape[-1] - boxes[:, 0], boxes[:, 3]], 1)
        x = x - mean[:, None, None]
        if std is not None:
            x = x / std[:, None, None]
        imgs.append(x)
        sizes.append((int(x.shape[-2]), int(x.shape[-1])))
        targets.append({"boxes": boxes, "labels": t["labels"], "image_id": t["image_id"]})
        scales.append(f)
    ph = -(-max(s[0] for s in sizes) // stride) * stride
    pw = -(-max(s[1] for s in sizes) // stride) * stride
    batch = torch.zeros(len(imgs), 3, ph, pw)
    for k, x in enumerate(imgs):
        batch[k, :, : x.shape[1], : x.shape[2]] = x
    return batch, sizes, targets, scales
