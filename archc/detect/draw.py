"""Draw detections on an image: a coloured box and a "class score" label per detection."""

from __future__ import annotations

from typing import Any

import torch

# a fixed palette: the same class always gets the same colour
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


def draw_detections(
    image: Any,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
    class_names: list[str],
    *,
    score_threshold: float = 0.5,
) -> Any:
    """A copy of `image` (PIL image or uint8 [3,H,W] tensor) with the detections scoring >= the threshold.

    Args:
        image: the picture.
        boxes: [N,4] (x1, y1, x2, y2) in its pixels.
        labels: [N] in 1..K.
        scores: [N].
        class_names: names of labels 1..K.
        score_threshold: weaker detections are not drawn.

    Returns:
        A PIL image.
    """
    from PIL import Image, ImageDraw

    if isinstance(image, torch.Tensor):
        image = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True):
        if score < score_threshold:
            continue
        colour = PALETTE[(int(label) - 1) % len(PALETTE)]
        draw.rectangle(box, outline=colour, width=2)
        name = class_names[int(label) - 1] if 0 < int(label) <= len(class_names) else str(label)
        text = f"{name} {score:.2f}"
        x, y = box[0], max(0.0, box[1] - 11)
        w = draw.textlength(text)
        draw.rectangle([x, y, x + w + 2, y + 10], fill=colour)
        draw.text((x + 1, y), text, fill=(0, 0, 0))
    return out
