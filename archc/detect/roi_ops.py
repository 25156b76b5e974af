"""RoIAlign (Mask R-CNN) and RoI max pooling (Fast R-CNN, as in the paper) with torch ops and autograd.

RoIs are [K,5] rows (batch index, x1, y1, x2, y2) in image pixels; `spatial_scale` (1/16 for the C4 trunk)
maps them onto the feature map.

RoIAlign averages `sampling_ratio^2` bilinear samples per output bin. Samples are gathered from the feature
map in channels-last layout with one index per sample and corner, so the backward pass is an index_add
done by autograd; RoIs are processed in chunks to bound the memory of the gathered corners.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHUNK_ELEMENTS = 1 << 25  # gathered values per chunk (128 MiB of float32)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _axis(start: Tensor, size: Tensor, bins: int, grid: int, limit: int) -> tuple[Tensor, ...]:
    """Sample positions along one axis and their bilinear neighbours/weights: [K, bins*grid] each."""
    steps = (torch.arange(bins * grid, dtype=start.dtype, device=start.device) // grid) + (
        (torch.arange(bins * grid, device=start.device) % grid).to(start.dtype) + 0.5
    ) / grid
    pos = start[:, None] + steps[None, :] * (size / bins)[:, None]
    valid = (pos >= -1.0) & (pos <= limit)
    pos = pos.clamp_min(0)
    low = pos.floor().long()
    at_edge = low >= limit - 1
    low = torch.where(at_edge, torch.full_like(low, limit - 1), low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(pos.dtype), pos)
    frac = pos - low.to(pos.dtype)
    return low, high, 1 - frac, frac, valid


def _align_group(feat: Tensor, rois: Tensor, out: tuple[int, int], scale: float, gh: int, gw: int, aligned: bool):
    n, c, h, w = feat.shape
    flat = feat.permute(0, 2, 3, 1).reshape(n * h * w, c)
    off = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * scale - off, rois[:, 2] * scale - off
    rw, rh = rois[:, 3] * scale - off - x1, rois[:, 4] * scale - off - y1
    if not aligned:
        rw, rh = rw.clamp_min(1.0), rh.clamp_min(1.0)
    yl, yh, wy0, wy1, vy = _axis(y1, rh, out[0], gh, h)
    xl, xh, wx0, wx1, vx = _axis(x1, rw, out[1], gw, w)
    base = rois[:, 0].long()[:, None, None] * (h * w)
    mask = (vy[:, :, None] & vx[:, None, :]).to(feat.dtype)
    total = 0
    for yi, wy in ((yl, wy0), (yh, wy1)):
        for xi, wx in ((xl, wx0), (xh, wx1)):
            idx = base + yi[:, :, None] * w + xi[:, None, :]
            weight = (wy[:, :, None] * wx[:, None, :]).to(feat.dtype) * mask
            total = total + flat[idx.reshape(-1)].reshape(*idx.shape, c) * weight[..., None]
    k = rois.shape[0]
    total = total.reshape(k, out[0], gh, out[1], gw, c).sum(dim=(2, 4)) / max(gh * gw, 1)
    return total.permute(0, 3, 1, 2)


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> Tensor:
    """RoIAlign: [N,C,H,W] features and [K,5] RoIs -> [K,C,oh,ow].

    Args:
        features: the feature map.
        rois: (batch index, x1, y1, x2, y2) in image pixels.
        output_size: oh, ow.
        spatial_scale: feature-map pixels per image pixel.
        sampling_ratio: samples per bin along each axis; <= 0: ceil(roi size / output size) per RoI.
        aligned: shift by half a pixel so that pixel centres line up (Detectron2's `aligned=True`).
    """
    out = _pair(output_size)
    k, c = rois.shape[0], features.shape[1]
    result = features.new_zeros((k, c, *out))
    if k == 0:
        return result
    rois = rois.to(features.dtype)
    if sampling_ratio > 0:
        groups = {(sampling_ratio, sampling_ratio): torch.arange(k, device=rois.device)}
    else:
        off = 0.5 if aligned else 0.0
        rw = rois[:, 3] * spatial_scale - rois[:, 1] * spatial_scale
        rh = rois[:, 4] * spatial_scale - rois[:, 2] * spatial_scale
        if not aligned:
            rw, rh = rw.clamp_min(1.0), rh.clamp_min(1.0)
        del off
        gh = torch.ceil(rh / out[0]).long().clamp_min(1).tolist()
        gw = torch.ceil(rw / out[1]).long().clamp_min(1).tolist()
        groups = {}
        for i, key in enumerate(zip(gh, gw, strict=True)):
            groups.setdefault(key, []).append(i)
        groups = {key: torch.tensor(v, device=rois.device) for key, v in groups.items()}
    pieces = []
    for (gh, gw), idx in groups.items():
        per = max(1, CHUNK_ELEMENTS // max(1, c * out[0] * gh * out[1] * gw))
        for chunk in idx.split(per):
            pieces.append((chunk, _align_group(features, rois[chunk], out, spatial_scale, gh, gw, aligned)))
    if len(pieces) == 1 and len(pieces[0][0]) == k:
        return pieces[0][1]
    order = torch.cat([p[0] for p in pieces])
    values = torch.cat([p[1] for p in pieces])
    return result.index_copy(0, order, values)


def _round_half_away(x: Tensor) -> Tensor:
    # C's round(): 2.5 -> 3 (torch.round would give 2)
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def roi_pool(features: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float) -> Tensor:
    """Fast R-CNN RoI max pooling: [N,C,H,W], [K,5] -> [K,C,oh,ow]; empty bins are 0.

    The RoI's corners are rounded to feature pixels, its size is end - start + 1, and bin i spans
    [floor(i * size / o), ceil((i + 1) * size / o)) from the start, clipped to the map: exactly the
    bins of adaptive max pooling over the RoI, which computes each one (outside the map reads -inf).
    """
    out = _pair(output_size)
    _, c, h, w = features.shape
    coords = _round_half_away(rois[:, 1:].detach().to(torch.float64) * spatial_scale).long().tolist()
    outs = []
    for b, (x1, y1, x2, y2) in zip(rois[:, 0].long().tolist(), coords, strict=True):
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        ys, ye, xs, xe = max(y1, 0), min(y1 + rh, h), max(x1, 0), min(x1 + rw, w)
        if ys >= ye or xs >= xe:
            outs.append(features.new_zeros((c, *out)))
            continue
        crop = features[b, :, ys:ye, xs:xe]
        pad = (xs - x1, x1 + rw - xe, ys - y1, y1 + rh - ye)
        if any(pad):
            crop = F.pad(crop, pad, value=-math.inf)
        pooled = F.adaptive_max_pool2d(crop[None], out)[0]
        outs.append(torch.where(torch.isinf(pooled), torch.zeros_like(pooled), pooled))
    return torch.stack(outs) if outs else features.new_zeros((0, c, *out))


class RoIAlign(nn.Module):
    """roi_align as a module (holds the output size, scale, sampling ratio and alignment)."""

    def __init__(
        self, output_size: int | tuple[int, int], spatial_scale: float, sampling_ratio: int = 2, aligned: bool = True
    ) -> None:
        super().__init__()
        self.output_size, self.spatial_scale = _pair(output_size), spatial_scale
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return roi_align(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)


class RoIPool(nn.Module):
    """roi_pool as a module (holds the output size and scale)."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float) -> None:
        super().__init__()
        self.output_size, self.spatial_scale = _pair(output_size), spatial_scale

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return roi_pool(features, rois, self.output_size, self.spatial_scale)
