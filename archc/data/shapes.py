"""A synthetic detection data set in COCO format: coloured squares, circles and triangles on small canvases.

Deterministic from its seed; used by the tests and the CPU demo (`--data shapes`). Boxes are the exact
pixel extents of the drawn shapes.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from archc.errors import DataError

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}, {"id": 3, "name": "triangle"}]
VERSION = 1


def _draw(draw, kind: int, x: int, y: int, s: int, colour: tuple[int, int, int], rng: random.Random):  # noqa: ANN001, ANN202
    """Draw one shape with its bounding box at (x, y, s, s); return the box [x, y, w, h] of its pixels."""
    if kind == 1:
        draw.rectangle([x, y, x + s - 1, y + s - 1], fill=colour)
        return [x, y, s, s]
    if kind == 2:
        draw.ellipse([x, y, x + s - 1, y + s - 1], fill=colour)
        return [x, y, s, s]
    # a triangle with its apex somewhere along the top edge and its base along the bottom
    apex = x + rng.randint(0, s - 1)
    draw.polygon([(apex, y), (x, y + s - 1), (x + s - 1, y + s - 1)], fill=colour)
    return [x, y, s, s]


def write_shapes(root: Path, num_images: int, *, seed: int, size: int = 128) -> Path:
    """Write `num_images` PNGs and root/annotations.json; returns the annotations path."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        bg = tuple(rng.randint(0, 90) for _ in range(3))
        img = Image.new("RGB", (size, size), bg)
        draw = ImageDraw.Draw(img)
        placed: list[tuple[int, int, int]] = []
        for _ in range(rng.randint(1, 4)):
            for _attempt in range(20):
                s = rng.randint(max(8, size // 10), max(9, size // 2))
                x, y = rng.randint(0, size - s), rng.randint(0, size - s)
                # keep shapes apart so that every one stays visible
                if all(x + s <= px or px + ps <= x or y + s <= py or py + ps <= y for px, py, ps in placed):
                    break
            else:
                continue
            placed.append((x, y, s))
            kind = rng.randint(1, 3)
            colour = tuple(rng.randint(130, 255) for _ in range(3))
            box = _draw(draw, kind, x, y, s, colour, rng)
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
        img.save(root / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def ensure_shapes(root: Path, *, train: int, test: int, seed: int, size: int = 128) -> tuple[Path, Path]:
    """root/train and root/test, generated once (a manifest records the parameters; regenerated if they differ).

    Returns:
        (train annotations, test annotations).
    """
    manifest = {"version": VERSION, "train": train, "test": test, "seed": seed, "size": size}
    mpath = root / "manifest.json"
    if mpath.is_file():
        try:
            if json.loads(mpath.read_text()) == manifest:
                return root / "train" / "annotations.json", root / "test" / "annotations.json"
        except ValueError:
            pass
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_shapes(tmp / "train", train, seed=seed, size=size)
        write_shapes(tmp / "test", test, seed=seed + 1_000_003, size=size)
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    except OSError as exc:
        raise DataError(f"cannot write the shapes data set under {root}: {exc}") from None
    return root / "train" / "annotations.json", root / "test" / "annotations.json"
