"""Anchors: `len(sizes) x len(ratios)` boxes centred on every feature-map cell (3 scales x 3 ratios by default)."""

from __future__ import annotations

import torch
from torch import Tensor


class AnchorGenerator:
    """Anchor boxes in image pixels for a feature map of a given stride.

    Anchor (size s, ratio r = height/width) has area s^2: width s/sqrt(r), height s*sqrt(r). It is centred on
    the cell's centre, ((x + 0.5) * stride, (y + 0.5) * stride).

    Args:
        sizes: anchor sides in pixels (the paper's RPN: 128, 256, 512).
        ratios: height/width ratios (0.5, 1, 2).
        stride: the feature map's stride in pixels (16 for the C4 trunk).
    """

    def __init__(
        self, sizes: tuple[float, ...] = (128, 256, 512), ratios: tuple[float, ...] = (0.5, 1.0, 2.0), stride: int = 16
    ) -> None:
        self.sizes = tuple(float(s) for s in sizes)
        self.ratios = tuple(float(r) for r in ratios)
        self.stride = stride
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map position."""
        return len(self.sizes) * len(self.ratios)

    def cell_anchors(self) -> Tensor:
        """[A,4] anchors centred on (0, 0), size-major then ratio (float64)."""
        rows = []
        for s in self.sizes:
            for r in self.ratios:
                w = s / r**0.5
                h = s * r**0.5
                rows.append([-w / 2, -h / 2, w / 2, h / 2])
        return torch.tensor(rows, dtype=torch.float64)

    def __call__(
        self, feat_h: int, feat_w: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """All anchors of a feature map, in image pixels.

        Args:
            feat_h: feature-map height.
            feat_w: feature-map width.
            device: where the anchors live.
            dtype: their dtype.

        Returns:
            [feat_h*feat_w*A, 4] ordered (row y, column x, anchor a): the order of an RPN head output
            [N, A*k, H, W] permuted to [N, H, W, A, k] and reshaped to [N, H*W*A, k]. The tensor is cached per
            (h, w, device, dtype) and shared between calls: do not modify it in place.
        """
        key = (feat_h, feat_w, str(device), dtype)
        if key not in self._cache:
            ys = (torch.arange(feat_h, dtype=torch.float64) + 0.5) * self.stride
            xs = (torch.arange(feat_w, dtype=torch.float64) + 0.5) * self.stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
            anchors = (centres + self.cell_anchors()[None]).reshape(-1, 4)
            self._cache[key] = anchors.to(device=device, dtype=dtype)
        return self._cache[key]
