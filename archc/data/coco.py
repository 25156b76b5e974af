"""COCO-format detection data (`--data coco:IMAGES,ANNOTATIONS`, or the generated `shapes`) and its batches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from archc.errors import DataError


class CocoDetection:
    """Images and boxes from a COCO JSON file.

    Category ids map to contiguous labels 1..K in id order (0 is background); crowd boxes and boxes without
    area are left out of the targets.

    Args:
        images_dir: where the `file_name`s are.
        annotations: the COCO JSON file.

    Raises:
        DataError: a missing or invalid file, an unknown category, a bad box.
    """

    def __init__(self, images_dir: Path, annotations: Path) -> None:
        self.images_dir, self.annotations = Path(images_dir), Path(annotations)
        if not self.annotations.is_file():
            raise DataError(f"annotations not found: {self.annotations}", hint="give coco:IMAGES_DIR,ANNOTATIONS.json")
        try:
            data = json.loads(self.annotations.read_text())
            cats = sorted(data["categories"], key=lambda c: c["id"])
            self.images = sorted(data["images"], key=lambda im: im["id"])
            anns = data["annotations"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{self.annotations} is not COCO detection JSON ({exc})") from None
        self.raw = data
        self.class_names = [c["name"] for c in cats]
        self.cat_to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
        self.label_to_cat = {v: k for k, v in self.cat_to_label.items()}
        self.boxes: dict[int, list[tuple[list[float], int]]] = {im["id"]: [] for im in self.images}
        for a in anns:
            if a.get("iscrowd", 0):
                continue
            if a["category_id"] not in self.cat_to_label:
                raise DataError(f"{self.annotations}: annotation {a.get('id')} has unknown category {a['category_id']}")
            if a["image_id"] not in self.boxes:
                raise DataError(f"{self.annotations}: annotation {a.get('id')} names unknown image {a['image_id']}")
            x, y, w, h = (float(v) for v in a["bbox"])
            if w < 0 or h < 0:
                raise DataError(f"{self.annotations}: annotation {a.get('id')} has a negative box size")
            if w > 0 and h > 0:
                self.boxes[a["image_id"]].append(([x, y, x + w, y + h], self.cat_to_label[a["category_id"]]))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(uint8 image [3,H,W], {boxes [G,4] xyxy, labels [G], image_id})."""
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        im = self.images[i]
        path = self.images_dir / im["file_name"]
        try:
            with Image.open(path) as f:
                arr = np.asarray(f.convert("RGB"), dtype=np.uint8).copy()
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        objs = self.boxes[im["id"]]
        boxes = torch.tensor([b for b, _ in objs], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([c for _, c in objs], dtype=torch.long)
        return torch.from_numpy(arr).permute(2, 0, 1), {"boxes": boxes, "labels": labels, "image_id": im["id"]}


@dataclass
class DetectionData:
    """Train and test sets of a detection data set."""

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
    """`shapes[:N_TRAIN,N_TEST]` (generated into `root`, default runs/data) or `coco:IMG,JSON[;IMG,JSON]`.

    With one coco pair the same set serves as test set (say so in results); with two, the second is the test set.

    Raises:
        DataError: an unknown kind or unreadable files.
    """
    from archc.data.shapes import ensure_shapes

    kind, _, arg = spec.partition(":")
    if kind == "shapes":
        try:
            n_train, n_test = (int(v) for v in arg.split(",")) if arg else (600, 100)
        except ValueError:
            raise DataError(f"shapes:N_TRAIN,N_TEST needs two numbers, got {arg!r}") from None
        base = (root or Path("runs") / "data") / f"shapes-{n_train}-{n_test}"
        tr, te = ensure_shapes(base, train=n_train, test=n_test, seed=0)
        return DetectionData(spec, CocoDetection(tr.parent, tr), CocoDetection(te.parent, te))
    if kind == "coco" and arg:
        parts = []
        for pair in arg.split(";"):
            images, sep, ann = pair.partition(",")
            if not sep:
                raise DataError(f"coco: needs IMAGES_DIR,ANNOTATIONS.json, got {pair!r}")
            parts.append(CocoDetection(Path(images), Path(ann)))
        return DetectionData(spec, parts[0], parts[-1])
    raise DataError(
        f"unknown detection data {spec!r}", hint="use shapes, shapes:N_TRAIN,N_TEST or coco:IMAGES,ANN.json"
    )


def detection_batches(
    dataset: CocoDetection,
    indices: list[int],
    *,
    min_size: int | None,
    max_size: int | None,
    flip: bool,
    generator: torch.Generator,
    mean: torch.Tensor,
    stride: int = 16,
) -> tuple[torch.Tensor, list[tuple[int, int]], list[dict], list[float]]:
    """Images resized (shorter side `min_size`, longer at most `max_size`), flipped at random, mean-subtracted,
    zero-padded to a common size divisible by `stride`; boxes scaled and flipped with them.

    Returns:
        (images [N,3,H,W], sizes before padding, targets, scale factors).
    """
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
            nh, nw = round(h * f), round(w * f)
            x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            boxes *= torch.tensor([nw / w, nh / h, nw / w, nh / h])
        if flip and flips[k]:
            x = x.flip(-1)
            boxes = torch.stack([x.shape[-1] - boxes[:, 2], boxes[:, 1], x.shape[-1] - boxes[:, 0], boxes[:, 3]], 1)
        imgs.append(x - mean[:, None, None])
        sizes.append(tuple(x.shape[-2:]))
        targets.append({"boxes": boxes, "labels": t["labels"], "image_id": t["image_id"]})
        scales.append(f)
    ph = -(-max(s[0] for s in sizes) // stride) * stride
    pw = -(-max(s[1] for s in sizes) // stride) * stride
    batch = torch.zeros(len(imgs), 3, ph, pw)
    for k, x in enumerate(imgs):
        batch[k, :, : x.shape[1], : x.shape[2]] = x
    return batch, sizes, targets, scales
