"""ImageNet-style class folders (ROOT/train/<class>/*.jpg, ROOT/val/<class>/...), decoded lazily with PIL."""

from __future__ import annotations

from pathlib import Path

import torch

from archc.data.batches import Augment, ClassifyData, Draw, ImageSet, ten_crop
from archc.errors import DataError

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


class FolderImageSet(ImageSet):
    """Image files with labels; every crop decodes its file (threads in Batches.prefetch overlap this)."""

    def __init__(self, paths: list[Path], labels: list[int]) -> None:
        self.paths = paths
        self.labels = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at `indices` decoded as RGB uint8 [B,3,h,w]; they must all have one size.

        Raises:
            DataError: an image cannot be read, or the images differ in size (use the crops instead).
        """
        out = [self._tensor(self._open(i)) for i in indices.tolist()]
        if len({tuple(t.shape) for t in out}) > 1:
            raise DataError(
                f"images of {self.paths[int(indices[0])].parent.parent} differ in size, so they cannot be stacked",
                hint="train on crops (Batches) instead of the stored images",
            )
        return torch.stack(out) if out else torch.empty((0, 3, 0, 0), dtype=torch.uint8)

    def _open(self, i: int):  # noqa: ANN202 - a PIL image
        return open_rgb(self.paths[i], hint="remove or replace the file")

    @staticmethod
    def _resize_shorter(im, side: int):  # noqa: ANN001, ANN205
        from PIL import Image

        w, h = im.size
        s = side / min(w, h)
        return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)

    @staticmethod
    def _tensor(im) -> torch.Tensor:  # noqa: ANN001
        import numpy as np

        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)

    def train_crops(self, indices: torch.Tensor, shape: tuple[int, ...], aug: Augment, d: Draw) -> torch.Tensor:
        """Scale augmentation (shorter side = the drawn side) and a random HxW crop, per image."""
        h, w = shape[1], shape[2]
        out = torch.empty((len(indices), 3, h, w), dtype=torch.uint8)
        for k, i in enumerate(indices.tolist()):
            side = int(d.side[k]) if aug.scale else max(h, w)
            im = self._resize_shorter(self._open(i), max(side, h, w))
            t = self._tensor(im)
            oy = min(int(d.u[k, 0] * (t.shape[1] - h + 1)), t.shape[1] - h)
            ox = min(int(d.u[k, 1] * (t.shape[2] - w + 1)), t.shape[2] - w)
            out[k] = t[:, oy : oy + h, ox : ox + w]
        return out

    def test_crops(self, indices: torch.Tensor, shape: tuple[int, ...], aug: Augment) -> torch.Tensor:
        """Shorter side resized to `resize_to` (default H*256/224), then the centre crop or the 10 crops."""
        h, w = shape[1], shape[2]
        side = aug.resize_to or round(max(h, w) * 256 / 224)
        crops = []
        for i in indices.tolist():
            t = self._tensor(self._resize_shorter(self._open(i), max(side, h, w)))
            if aug.test_crop == "ten":
                crops.append(ten_crop(t[None], h, w))
            else:
                cy, cx = (t.shape[1] - h) // 2, (t.shape[2] - w) // 2
                crops.append(t[None, :, cy : cy + h, cx : cx + w])
        return torch.cat(crops) if crops else torch.empty((0, 3, h, w), dtype=torch.uint8)


def open_rgb(path: Path, hint: str):  # noqa: ANN201 - a PIL image
    """Decode an image file as RGB with PIL; a file PIL cannot or will not decode is a DataError naming it.

    PIL refuses images of more than twice Image.MAX_IMAGE_PIXELS (a decompression bomb: a small file that
    decodes to gigabytes); that is reported like any other unreadable file.

    Raises:
        DataError: the file is missing, not an image, truncated, or a decompression bomb.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise DataError(f"refusing image {path}: {exc}", hint=hint) from None
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, EOFError... on broken files
        raise DataError(f"cannot read image {path}: {exc}", hint=hint) from None


def _scan(split_dir: Path, classes: list[str] | None) -> tuple[list[str], list[Path], list[int]]:
    if not split_dir.is_dir():
        raise DataError(f"image folder missing: {split_dir}", hint="expected ROOT/train/<class>/ and ROOT/val/<class>/")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if classes is not None and found != classes:
        extra = sorted(set(found) ^ set(classes))
        raise DataError(
            f"{split_dir} has other classes than the training folder: {', '.join(extra[:5])}",
            hint="train/ and val/ need the same class subfolders",
        )
    paths, labels = [], []
    for label, name in enumerate(found):
        files = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(f"class folder {split_dir / name} holds no images", hint="remove it or add images")
        paths += files
        labels += [label] * len(files)
    if not found:
        raise DataError(f"{split_dir} has no class subfolders")
    return found, paths, labels


def imagefolder(root: Path) -> ClassifyData:
    """Open ROOT/train and ROOT/val; classes are the sorted subfolder names of train/."""
    if not root.is_dir():
        raise DataError(f"image folder root not found: {root}")
    classes, tr_paths, tr_labels = _scan(root / "train", None)
    _, va_paths, va_labels = _scan(root / "val", classes)
    return ClassifyData(
        f"imagefolder:{root}", classes, FolderImageSet(tr_paths, tr_labels), FolderImageSet(va_paths, va_labels)
    )
