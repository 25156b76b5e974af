"""A synthetic detection data set in COCO format: coloured squares, circles and triangles on small canvases.

Deterministic from its seed; used by the tests and the CPU demo (`--data shapes`). Boxes are the exact
pixel extents of the drawn shapes: a box [x, y, w, h] covers the pixel columns x .. x+w-1 and rows
y .. y+h-1, so in (x1, y1, x2, y2) form x2 = x + w is the right edge of the last pixel.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from archc.errors import DataError

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}, {"id": 3, "name": "triangle"}]
# bump when the generator's output changes, so that cached copies are regenerated
VERSION = 1
MIN_SIZE = 16
# shape colours are at least this bright in every channel, backgrounds (noise included) below it, so a
# shape's pixels can be told from the background by brightness alone
SHAPE_MIN_LEVEL = 130
BACKGROUND_MAX_LEVEL = 90


def _draw(
    draw: Any, canvas: int, kind: int, x: int, y: int, s: int, colour: tuple[int, ...], rng: random.Random
) -> list[int]:
    """Draw one shape inside the s x s square at (x, y); return the [x, y, w, h] box of its pixels."""
    if kind == 1:
        draw.rectangle([x, y, x + s - 1, y + s - 1], fill=colour)
        return [x, y, s, s]
    if kind == 2:
        # PIL fills an ellipse's bounding square inclusively: the disc touches all four sides
        draw.ellipse([x, y, x + s - 1, y + s - 1], fill=colour)
        return [x, y, s, s]
    # a triangle with its apex somewhere along the top edge and its base along the bottom
    apex = x + rng.randint(0, s - 1)
    vertices = [(apex, y), (x, y + s - 1), (x + s - 1, y + s - 1)]
    draw.polygon(vertices, fill=colour)
    xs, ys = [v[0] for v in vertices], [v[1] for v in vertices]
    x1, y1 = max(0, min(xs)), max(0, min(ys))
    x2, y2 = min(canvas - 1, max(xs)), min(canvas - 1, max(ys))
    return [x1, y1, x2 - x1 + 1, y2 - y1 + 1]


def _background(size: int, colour: tuple[int, ...], noise: int, seed: int, index: int) -> Any:
    """A plain canvas, or one with uniform per-pixel noise of +-`noise` levels (from its own generator)."""
    from PIL import Image

    if noise <= 0:
        return Image.new("RGB", (size, size), colour)
    import numpy as np

    # a separate generator keeps the shapes' layout the same with and without noise
    gen = np.random.default_rng([seed, index])
    pix = np.asarray(colour, dtype=np.int16) + gen.integers(-noise, noise + 1, size=(size, size, 3), dtype=np.int16)
    return Image.fromarray(np.clip(pix, 0, BACKGROUND_MAX_LEVEL + noise).astype(np.uint8), "RGB")


def write_shapes(root: Path, num_images: int, *, seed: int, size: int = 128, noise: int = 0) -> Path:
    """Write `num_images` PNGs and root/annotations.json (COCO format).

    Each image has 1-4 shapes of 12-64 px (at size 128; they scale with it) whose boxes do not overlap,
    in bright colours on a dark random background.

    Args:
        root: the folder to write (created).
        num_images: how many images.
        seed: all randomness comes from it.
        size: canvas width and height in pixels.
        noise: amplitude of uniform background noise in levels (0: a plain background; at most 39, so
            the background stays darker than every shape).

    Returns:
        The annotations path.

    Raises:
        DataError: a nonsensical size, count or noise level, or a folder that cannot be written.
    """
    from PIL import ImageDraw

    if num_images < 0 or size < MIN_SIZE or not 0 <= noise < SHAPE_MIN_LEVEL - BACKGROUND_MAX_LEVEL:
        raise DataError(
            f"cannot generate {num_images} shapes images of {size}x{size} with noise {noise}",
            hint=f"use a count >= 0, a size >= {MIN_SIZE} and a noise level in 0..39",
        )
    rng = random.Random(seed)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {root}: {exc}") from None
    images, annotations = [], []
    for i in range(num_images):
        bg = tuple(rng.randint(0, BACKGROUND_MAX_LEVEL) for _ in range(3))
        img = _background(size, bg, noise, seed, i)
        draw = ImageDraw.Draw(img)
        placed: list[tuple[int, int, int]] = []
        for _ in range(rng.randint(1, 4)):
            for _attempt in range(20):
                s = rng.randint(max(8, size // 10), max(9, size // 2))
                x, y = rng.randint(0, size - s), rng.randint(0, size - s)
                # keep the boxes apart so that every shape stays whole and its box exact
                if all(x + s <= px or px + ps <= x or y + s <= py or py + ps <= y for px, py, ps in placed):
                    break
            else:
                continue
            placed.append((x, y, s))
            kind = rng.randint(1, 3)
            colour = tuple(rng.randint(SHAPE_MIN_LEVEL, 255) for _ in range(3))
            box = _draw(draw, size, kind, x, y, s, colour, rng)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": kind,
                    "bbox": box,
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        name = f"{i:06d}.png"
        try:
            img.save(root / name)
        except OSError as exc:
            raise DataError(f"cannot write {root / name}: {exc}") from None
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def _complete(root: Path, manifest: dict[str, Any]) -> bool:
    """Whether `root` holds both splits written with exactly these parameters, every image present."""
    try:
        if json.loads((root / "manifest.json").read_text()) != manifest:
            return False
        for split in ("train", "test"):
            data = json.loads((root / split / "annotations.json").read_text())
            if len(data["images"]) != manifest[split]:
                return False
            if not all((root / split / im["file_name"]).is_file() for im in data["images"]):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def ensure_shapes(
    root: Path, *, train: int, test: int, seed: int, size: int = 128, noise: int = 0
) -> tuple[Path, Path]:
    """Generate root/train and root/test once; reuse them while complete and made with these parameters.

    A manifest records the generator's parameters. A missing, different or incomplete copy is regenerated
    in a temporary folder beside `root` and swapped in by renames, so a reader never sees half a data set,
    and processes that generate at the same time (one per training rank) all end with the same copy.

    Args:
        root: the cache folder.
        train: training images.
        test: test images (generated from another seed than the training ones).
        seed: the generator's seed.
        size: canvas size.
        noise: background noise amplitude (see `write_shapes`).

    Returns:
        (train annotations, test annotations).

    Raises:
        DataError: bad parameters, or the cache cannot be written.
    """
    root = Path(root)
    paths = root / "train" / "annotations.json", root / "test" / "annotations.json"
    manifest = {"version": VERSION, "train": train, "test": test, "seed": seed, "size": size, "noise": noise}
    if _complete(root, manifest):
        return paths
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    except OSError as exc:
        raise DataError(f"cannot write the shapes data set under {root}: {exc}") from None
    try:
        write_shapes(tmp / "train", train, seed=seed, size=size, noise=noise)
        write_shapes(tmp / "test", test, seed=seed + 1_000_003, size=size, noise=noise)
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        for _attempt in range(5):
            try:
                os.rename(tmp, root)
                return paths
            except OSError:
                # another process may have finished first: its copy is as good as ours
                if _complete(root, manifest):
                    return paths
            # a stale copy is in the way: move it aside (atomically) and try again
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            try:
                os.rename(root, old / "data")
            except OSError:
                pass
            shutil.rmtree(old, ignore_errors=True)
        raise DataError(
            f"cannot replace the shapes data set at {root}", hint="remove that folder and run again"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot write the shapes data set under {root}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
