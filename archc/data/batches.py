"""Batches for training and testing: per-iteration determinism, sharding, and the paper's augmentation.

Training batch `i` is a pure function of (seed, i): the epoch's order comes from a generator seeded by
(seed, epoch) and every random choice of the augmentation from one seeded by (seed, i). The random draws
are made for the whole global batch and each process takes its rows, so N processes together see exactly
the images and crops one process would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from archc.data.augment import Augment
from archc.errors import DataError


@dataclass
class Draw:
    """The random choices for a batch: crop position in [0,1), flip, shorter side, PCA weights."""

    u: torch.Tensor  # [B,2] fractional crop offsets (y, x)
    flip: torch.Tensor  # [B] bool
    side: torch.Tensor  # [B] shorter side for scale augmentation
    alpha: torch.Tensor  # [B,3]

    def rows(self, sel: slice) -> Draw:
        return Draw(self.u[sel], self.flip[sel], self.side[sel], self.alpha[sel])


class ImageSet(ABC):
    """A labelled image collection; subclasses say how images are stored and may say how crops are made."""

    labels: torch.Tensor

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 images [B,C,h,w] at their stored size (sets of equal-sized images)."""

    def train_crops(self, indices: torch.Tensor, shape: tuple[int, ...], aug: Augment, d: Draw) -> torch.Tensor:
        """uint8 [B,C,H,W] training crops: zero-pad by `pad_crop` and crop at the drawn offsets."""
        imgs = self.load(indices)
        p = aug.pad_crop
        if p <= 0:
            return imgs
        padded = F.pad(imgs, (p, p, p, p))
        h, w = shape[1], shape[2]
        oy = (d.u[:, 0] * (2 * p + 1)).long().clamp_max(2 * p)
        ox = (d.u[:, 1] * (2 * p + 1)).long().clamp_max(2 * p)
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None].expand(-1, imgs.shape[1], -1, padded.shape[3])
        out = padded.gather(2, rows)
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :].expand(-1, imgs.shape[1], h, -1)
        return out.gather(3, cols)

    def test_crops(self, indices: torch.Tensor, shape: tuple[int, ...], aug: Augment) -> torch.Tensor:
        """uint8 test crops: [B,C,H,W] (center) or [B*10,C,H,W] (ten: corners and centre, then flipped)."""
        imgs = self.load(indices)
        if aug.test_crop != "ten":
            return imgs
        p = max(aug.pad_crop, 0)
        return ten_crop(F.pad(imgs, (p, p, p, p)), shape[1], shape[2])


@dataclass
class ClassifyData:
    """A train/test pair and its class names (archc.data.classify and archc.data.folder open them)."""

    name: str
    classes: list[str]
    train: ImageSet
    test: ImageSet


def ten_crop(imgs: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The 10 crops of each image (4 corners, centre, and their mirror images), image-major: [B*10,C,h,w]."""
    big_h, big_w = imgs.shape[-2:]
    if big_h < h or big_w < w:
        raise DataError(f"cannot take {h}x{w} crops from {big_h}x{big_w} images")
    cy, cx = (big_h - h) // 2, (big_w - w) // 2
    corners = [(0, 0), (0, big_w - w), (big_h - h, 0), (big_h - h, big_w - w), (cy, cx)]
    five = [imgs[..., y : y + h, x : x + w] for y, x in corners]
    crops = torch.stack(five + [c.flip(-1) for c in five], dim=1)
    return crops.reshape(-1, *crops.shape[2:])


def draw(n: int, aug: Augment, g: torch.Generator) -> Draw:
    """Random choices for `n` images, always drawn in the same order (so they do not depend on the kind)."""
    u = torch.rand((n, 2), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    lo, hi = aug.scale or (0, 0)
    side = torch.randint(lo, hi + 1, (n,), generator=g) if aug.scale else torch.zeros(n, dtype=torch.long)
    alpha = torch.randn((n, 3), generator=g) * aug.pca_std
    return Draw(u, flip if aug.flip else torch.zeros(n, dtype=torch.bool), side, alpha)


def pixel_mean(data: ImageSet, input_shape: tuple[int, ...], limit: int = 10_000) -> torch.Tensor:
    """Per-pixel mean [C,H,W] in [0,1] of the training images at the net's input size (Sec 3.4, 4.2).

    Uses every image up to `limit`, then an evenly spaced subset of `limit` (deterministic).
    """
    n = len(data)
    idx = torch.arange(n) if n <= limit else torch.linspace(0, n - 1, limit).long()
    total = torch.zeros(tuple(input_shape), dtype=torch.float64)
    aug = Augment(test_crop="center")
    for chunk in idx.split(512):
        total += data.test_crops(chunk, input_shape, aug).double().sum(0)
    return (total / (255.0 * len(idx))).float()


def pca_basis(data: ImageSet, input_shape: tuple[int, ...], limit: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues [3] and eigenvectors [3,3] of the RGB covariance of training pixels (AlexNet's colour PCA)."""
    n = len(data)
    idx = torch.arange(n) if n <= limit else torch.linspace(0, n - 1, limit).long()
    px = torch.cat([data.test_crops(c, input_shape, Augment()).double().div(255).flatten(2) for c in idx.split(256)])
    px = px.permute(1, 0, 2).reshape(px.shape[1], -1)
    if px.shape[0] != 3:
        raise DataError("PCA colour augmentation needs 3-channel images", hint="--hp pca_std=0")
    cov = torch.cov(px)
    vals, vecs = torch.linalg.eigh(cov)
    return vals.float(), vecs.float()


class Batches:
    """Training batches by iteration number, or test batches in order.

    Args:
        data: the image set.
        batch_size: the global batch (train) or per-process batch (test).
        input_shape: the net's (C, H, W).
        train: augment and shuffle (True) or iterate in order (False).
        augment: what to do to the images.
        mean: per-pixel mean [C,H,W] to subtract, or None.
        seed: seeds the order and the augmentation.
        rank, world: this process's shard of each global batch.
        workers: threads preparing batches ahead in `prefetch`.
    """

    def __init__(
        self,
        data: ImageSet,
        *,
        batch_size: int,
        input_shape: tuple[int, int, int],
        train: bool,
        augment: Augment,
        mean: torch.Tensor | None,
        seed: int,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
    ) -> None:
        if train and batch_size % world:
            raise DataError(f"a batch of {batch_size} does not split over {world} processes")
        if train and len(data) < batch_size:
            raise DataError(
                f"the training set has {len(data)} images, fewer than one batch of {batch_size}",
                hint="lower --batch-size",
            )
        self.data, self.batch_size, self.shape = data, batch_size, tuple(input_shape)
        self.train, self.aug, self.mean, self.seed = train, augment, mean, seed
        self.rank, self.world, self.workers = rank, world, workers
        self.pca = pca_basis(data, input_shape) if train and augment.pca_std > 0 else None

    def __len__(self) -> int:
        if self.train:
            return len(self.data) // self.batch_size
        return -(-len(self._eval_indices()) // self.batch_size)

    def _finish(self, u8: torch.Tensor, d: Draw | None) -> torch.Tensor:
        x = u8.float().div_(255.0)
        if d is not None:
            if d.flip.any():
                x[d.flip] = x[d.flip].flip(-1)
            if self.pca is not None:
                vals, vecs = self.pca
                shift = (d.alpha * vals) @ vecs.T  # [B,3]: sum_j v_j * alpha_j * lambda_j
                x += shift[:, :, None, None]
        if self.mean is not None:
            x -= self.mean
        return x

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's share of training batch `index` (any index, also past the first epoch)."""
        per = len(self)
        epoch, pos = divmod(index, per)
        perm = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        idx = perm[pos * self.batch_size : (pos + 1) * self.batch_size]
        d = draw(len(idx), self.aug, torch.Generator().manual_seed((self.seed * 1_000_003 + index) * 2 + 1))
        b = self.batch_size // self.world
        sel = slice(self.rank * b, (self.rank + 1) * b)
        idx, d = idx[sel], d.rows(sel)
        x = self._finish(self.data.train_crops(idx, self.shape, self.aug, d), d)
        return x, self.data.labels[idx]

    def prefetch(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """batch(start), batch(start + 1), ... prepared `workers` ahead on threads."""
        if self.workers <= 0:
            i = start
            while True:
                yield self.batch(i)
                i += 1
        with ThreadPoolExecutor(self.workers, thread_name_prefix="archc-data") as pool:
            pending = [pool.submit(self.batch, start + k) for k in range(self.workers)]
            i = start + self.workers
            while True:
                out = pending.pop(0).result()
                pending.append(pool.submit(self.batch, i))
                i += 1
                yield out

    def _eval_indices(self) -> torch.Tensor:
        n = len(self.data)
        lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
        return torch.arange(lo, hi)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Test batches over this process's contiguous share of the set, in order."""
        for chunk in self._eval_indices().split(self.batch_size):
            u8 = self.data.test_crops(chunk, self.shape, self.aug)
            yield self._finish(u8, None), self.data.labels[chunk]
