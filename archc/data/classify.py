"""Classification data sets: the embedded digits, CIFAR-10 batches, image folders and synthetic images.

`open_classify_data("cifar10:/data/cifar-10-batches-py", ...)` returns train and test `ImageSet`s; the
batching and augmentation live in archc.data.batches (re-exported here).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

from archc.data.batches import Augment, Batches, ClassifyData, ImageSet, pixel_mean
from archc.data.folder import imagefolder
from archc.errors import DataError

KINDS = ("digits", "cifar10:PATH", "imagefolder:PATH", "synthetic[:N]")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


class TensorImageSet(ImageSet):
    """Images held in memory as uint8 [N,C,H,W] with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4 and len(images) == len(labels)
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at `indices` as stored (uint8)."""
        return self.images[indices]


def _resize_u8(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resize uint8 [N,C,h,w] to `shape` (bilinear), replicating one channel to C if needed."""
    c, h, w = shape
    x = images.float()
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=x.shape[-1] > w)
    if x.shape[1] != c:
        if x.shape[1] != 1:
            raise DataError(f"cannot turn {x.shape[1]}-channel images into {c} channels", hint="--set input_size")
        x = x.expand(-1, c, -1, -1)
    return x.round().clamp(0, 255).to(torch.uint8).contiguous()


def digits(shape: tuple[int, int, int]) -> ClassifyData:
    """scikit-learn's bundled 8x8 digit scans (1,797 real images), resized to `shape`.

    The split is fixed and stratified: within each class, a permutation from seed 0 puts the first 20%
    in the test set (359 test, 1,438 training images).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images).float().mul(255.0 / 16.0).round().to(torch.uint8)[:, None]
    labels = torch.from_numpy(d.target).long()
    g = torch.Generator().manual_seed(0)
    test_idx = []
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test_idx.append(idx[: round(0.2 * len(idx))])
    test = torch.cat(test_idx).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[test] = False
    train = mask.nonzero().flatten()
    resized = _resize_u8(images, shape)
    return ClassifyData(
        "digits",
        [str(i) for i in range(10)],
        TensorImageSet(resized[train], labels[train]),
        TensorImageSet(resized[test], labels[test]),
    )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles exactly what CIFAR batches hold: dicts, lists, bytes, numbers and numpy uint8 arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        # numpy pickles an empty array's buffer as bytes() (an empty batch is a legitimate batch)
        ("__builtin__", "bytes"),
        ("builtins", "bytes"),
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"CIFAR-10 file missing: {path}", hint="point cifar10: at the cifar-10-batches-py directory")
    try:
        obj = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as exc:  # truncated, corrupt or hostile: the file is at fault
        raise DataError(f"cannot read CIFAR-10 file {path}: {exc}", hint="re-extract the CIFAR-10 archive") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a CIFAR-10 batch (a {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_part(root: Path, names: list[str]) -> TensorImageSet:
    import numpy as np

    images, labels = [], []
    for name in names:
        path = root / name
        b = _read_batch(path)
        try:
            data = np.asarray(b["data"], dtype=np.uint8)
            lab = np.asarray(b["labels"])
        except KeyError as exc:
            raise DataError(f"{path} lacks the {exc} entry of a CIFAR-10 batch") from None
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: the data entry is not N x 3072 bytes ({exc})") from None
        if lab.size and (lab.dtype.kind not in "iu" or lab.ndim != 1):
            raise DataError(
                f"{path}: labels must be a list of integers 0..9, got {lab.dtype} values of shape {lab.shape}",
                hint="re-extract the CIFAR-10 archive",
            )
        lab = lab.astype(np.int64).reshape(-1)
        if data.size == 0 and len(lab) == 0:
            data = data.reshape(0, 3072)  # an empty batch (stored as an empty list) is a batch of no images
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataError(
                f"{path}: expected data of N x 3072 bytes and N labels, got {data.shape} and {len(lab)} labels"
            )
        if len(lab) and (lab.min() < 0 or lab.max() > 9):
            raise DataError(f"{path}: labels outside 0..9")
        # rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(lab.copy()))
    return TensorImageSet(torch.cat(images), torch.cat(labels))


def cifar10(root: Path, shape: tuple[int, int, int]) -> ClassifyData:
    """The python-pickle CIFAR-10 directory (data_batch_1..5, test_batch, batches.meta)."""
    if not root.is_dir():
        raise DataError(f"CIFAR-10 directory not found: {root}", hint="download and extract cifar-10-python.tar.gz")
    meta = _read_batch(root / "batches.meta")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
    if len(names) != 10:
        raise DataError(f"{root / 'batches.meta'}: expected 10 label_names, got {len(names)}")
    train = _cifar_part(root, [f"data_batch_{i}" for i in range(1, 6)])
    test = _cifar_part(root, ["test_batch"])
    if shape[1:] != (32, 32) or shape[0] != 3:
        train = TensorImageSet(_resize_u8(train.images, shape), train.labels)
        test = TensorImageSet(_resize_u8(test.images, shape), test.labels)
    return ClassifyData(f"cifar10:{root}", names, train, test)


def synthetic(shape: tuple[int, int, int], num_classes: int, n: int) -> ClassifyData:
    """Random uint8 images with uniform labels (seed 1234): for measuring speed, not accuracy."""
    g = torch.Generator().manual_seed(1234)
    m = max(1, n // 4)
    imgs = torch.randint(0, 256, (n + m, *shape), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n + m,), generator=g)
    return ClassifyData(
        f"synthetic:{n}",
        [str(i) for i in range(num_classes)],
        TensorImageSet(imgs[:n], labels[:n]),
        TensorImageSet(imgs[n:], labels[n:]),
    )


def open_classify_data(
    spec: str | None, *, input_shape: tuple[int, int, int], num_classes: int, root: Path | None = None
) -> ClassifyData:
    """Open the data set a `--data` string names, checked against the net's input and head.

    Args:
        spec: None or "digits" (embedded), "cifar10:PATH", "imagefolder:PATH", "synthetic" or "synthetic:N".
        input_shape: the net's input (C, H, W); images are resized to it.
        num_classes: the width of the net's head.
        root: unused (kept for data sets generated into a cache directory).

    Raises:
        DataError: an unknown kind, unreadable files, or a class count that does not fit the head.
    """
    kind, _, arg = (spec or "digits").partition(":")
    shape = tuple(int(s) for s in input_shape)
    if kind == "digits" and not arg:
        data = digits(shape)  # type: ignore[arg-type]
    elif kind == "cifar10" and arg:
        data = cifar10(Path(arg), shape)  # type: ignore[arg-type]
    elif kind == "imagefolder" and arg:
        data = imagefolder(Path(arg))
    elif kind == "synthetic":
        try:
            n = int(arg) if arg else 4096
        except ValueError:
            raise DataError(f"synthetic:N needs a number of images, got {arg!r}") from None
        if n < 1:
            raise DataError("synthetic:N needs at least one image")
        return synthetic(shape, num_classes, n)  # type: ignore[arg-type]
    else:
        raise DataError(f"unknown data set {spec!r}", hint=f"use one of: {', '.join(KINDS)}")
    if len(data.classes) != num_classes:
        raise DataError(
            f"{data.name} has {len(data.classes)} classes but the net's head predicts {num_classes}",
            hint=f"--set num_classes={len(data.classes)}",
        )
    return data


__all__ = ["Augment", "Batches", "ClassifyData", "ImageSet", "TensorImageSet", "open_classify_data", "pixel_mean"]
