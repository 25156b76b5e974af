"""Draw detections on an image: a coloured box and a "class score" label per detection."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from typing import Any

import torch

from archc.errors import DataError

# a fixed palette of well-separated colours for the first classes
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
    (0, 128, 128),
    (170, 110, 40),
]
LINE_WIDTH = 2
TEXT_HEIGHT = 11
# `archc detect` draws on at least this shorter side: on a 128 px image PIL's 11 px labels hide the objects
DRAW_MIN_SIZE = 512


def class_colour(label: int) -> tuple[int, int, int]:
    """The colour of class `label` (1..K): the palette, then hues spaced by the golden ratio.

    Args:
        label: the class label.

    Returns:
        An RGB triple, always the same for the same label.
    """
    if 1 <= label <= len(PALETTE):
        return PALETTE[label - 1]
    # golden-ratio steps keep any number of further classes apart in hue
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def _to_pil(image: Any) -> Any:
    """A PIL RGB copy of a PIL image or a [3,H,W] / [1,H,W] / [H,W] tensor (uint8, or float in [0,1])."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, torch.Tensor):
        raise DataError(f"cannot draw on a {type(image).__name__}", hint="give a PIL image or a [3,H,W] tensor")
    x = image.detach().cpu()
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise DataError(f"cannot draw on a tensor of shape {list(image.shape)}", hint="give [3,H,W] or [1,H,W]")
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(x.expand(3, -1, -1).permute(1, 2, 0).contiguous().numpy(), "RGB")


def draw_detections(
    image: Any,
    boxes: torch.Tensor | Sequence[Sequence[float]],
    labels: torch.Tensor | Sequence[int],
    scores: torch.Tensor | Sequence[float],
    class_names: list[str],
    *,
    score_threshold: float = 0.5,
    min_size: int = 0,
) -> Any:
    """A copy of `image` with the detections scoring at least `score_threshold` drawn on it.

    Each detection gets a rectangle in its class's colour and a filled label "name 0.93" outside it: above
    the box, below it where the image's top edge leaves no room, inside its top edge only where neither
    fits. Weaker detections are drawn first so that strong ones stay on top. An image whose shorter side
    is under `min_size` is enlarged by a whole factor first (nearest neighbour: the pixels stay as they
    were), so that the labels are small next to the objects.

    Args:
        image: a PIL image, or a [3,H,W] tensor (uint8, or float in [0,1]).
        boxes: [N,4] (x1, y1, x2, y2) in its pixels.
        labels: [N] in 1..K.
        scores: [N].
        class_names: names of labels 1..K.
        score_threshold: weaker detections are not drawn.
        min_size: the shorter side to enlarge a smaller image to (at least); 0 keeps the size.

    Returns:
        A PIL RGB image (the input is not changed), `k` times the input's size for the factor `k`.

    Raises:
        DataError: an image that is not a picture, or boxes, labels and scores of different lengths.
    """
    from PIL import Image, ImageDraw

    out = _to_pil(image).copy()
    k = math.ceil(min_size / min(out.size)) if min_size > min(out.size) else 1
    if k > 1:
        out = out.resize((out.size[0] * k, out.size[1] * k), Image.Resampling.NEAREST)
    width, height = out.size
    b = (torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) * k).tolist()
    lab = torch.as_tensor(labels).reshape(-1).tolist()
    sc = torch.as_tensor(scores, dtype=torch.float32).reshape(-1).tolist()
    if not len(b) == len(lab) == len(sc):
        raise DataError(f"{len(b)} boxes, {len(lab)} labels and {len(sc)} scores to draw", hint="one of each per box")
    draw = ImageDraw.Draw(out)
    for k in sorted(range(len(b)), key=lambda k: sc[k]):
        score, label = sc[k], int(lab[k])
        if score < score_threshold:
            continue
        x1, y1, x2, y2 = b[k]
        # PIL needs ordered corners; clipping keeps a box that leaves the image visible at its edge
        x1, x2 = sorted((min(max(x1, 0.0), width - 1.0), min(max(x2, 0.0), width - 1.0)))
        y1, y2 = sorted((min(max(y1, 0.0), height - 1.0), min(max(y2, 0.0), height - 1.0)))
        colour = class_colour(label)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=LINE_WIDTH)
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        text = f"{name} {score:.2f}"
        # outside the box, where the label does not hide the object: above, else below, else inside
        if y1 >= TEXT_HEIGHT:
            ty = y1 - TEXT_HEIGHT
        elif y2 + 1 + TEXT_HEIGHT <= height:
            ty = y2 + 1
        else:
            ty = y1
        tw = draw.textlength(text)
        tx = max(0.0, min(x1, width - tw - 3))  # kept inside the image at the right edge
        draw.rectangle([tx, ty, tx + tw + 2, ty + TEXT_HEIGHT - 1], fill=colour)
        draw.text((tx + 1, ty), text, fill=(0, 0, 0))
    return out
