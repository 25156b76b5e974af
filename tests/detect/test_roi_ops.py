"""RoIAlign and RoIPool against slow direct references (Python loops, float64), gradcheck and arg-max routing."""

import math

import pytest
import torch

import archc.detect.roi_ops as roi_ops
from archc.detect.roi_ops import RoIAlign, RoIPool, roi_align, roi_pool


def _bilinear(f, y, x):
    """One sample of feature map f [C,H,W] (torchvision/Detectron semantics), as a list of C floats."""
    c, h, w = f.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return [0.0] * c
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= h - 1:
        yl = yh = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= w - 1:
        xl = xh = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    v = f.tolist()
    return [
        (1 - ly) * (1 - lx) * v[ch][yl][xl]
        + (1 - ly) * lx * v[ch][yl][xh]
        + ly * (1 - lx) * v[ch][yh][xl]
        + ly * lx * v[ch][yh][xh]
        for ch in range(c)
    ]


def _align_reference(feat, rois, out, scale, ratio, aligned):
    oh, ow = out
    res = torch.zeros(len(rois), feat.shape[1], oh, ow, dtype=torch.float64)
    off = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / ow, rh / oh
        gh = ratio if ratio > 0 else math.ceil(rh / oh)
        gw = ratio if ratio > 0 else math.ceil(rw / ow)
        for py in range(oh):
            for px in range(ow):
                acc = [0.0] * feat.shape[1]
                for iy in range(gh):
                    for ix in range(gw):
                        y = y1 + py * bh + (iy + 0.5) * bh / gh
                        x = x1 + px * bw + (ix + 0.5) * bw / gw
                        acc = [a + s for a, s in zip(acc, _bilinear(feat[int(b)], y, x), strict=True)]
                res[k, :, py, px] = torch.tensor(acc, dtype=torch.float64) / max(gh * gw, 1)
    return res


def _rois(g, n, images, size):
    b = torch.randint(0, images, (n, 1), generator=g).double()
    xy = torch.rand((n, 2), generator=g, dtype=torch.float64) * size
    wh = torch.rand((n, 2), generator=g, dtype=torch.float64) * size / 2 + 1
    # shifted so that some RoIs reach past the map on every side
    return torch.cat([b, torch.cat([xy, xy + wh], dim=1) - size * 0.15], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [1, 2, 0])
def test_roi_align_matches_the_direct_reference(aligned, ratio):
    g = torch.Generator().manual_seed(1)
    feat = torch.randn((3, 2, 9, 11), generator=g, dtype=torch.float64)
    rois = _rois(g, 10, 3, 140.0)
    rois[0, 1:] = torch.tensor([16.0, 16.0, 17.0, 18.0])  # tiny RoI (the 1x1 clamp when not aligned)
    rois[1, 1:] = torch.tensor([150.0, 120.0, 170.0, 160.0])  # far outside: only invalid samples
    scale, out = 1 / 16 * 1.5, (3, 2)
    got = roi_align(feat, rois, out, scale, ratio, aligned)
    want = _align_reference(feat, rois, out, scale, ratio, aligned)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got[1].abs().max().item() == 0.0
    assert torch.equal(RoIAlign(out, scale, ratio, aligned)(feat, rois), got)


def test_roi_align_degenerate_adaptive_roi_pools_to_zero():
    feat = torch.randn((1, 2, 5, 5), dtype=torch.float64)
    rois = torch.tensor([[0.0, 2.0, 2.0, 2.0, 4.0], [0.0, 1.0, 1.0, 3.0, 3.0]], dtype=torch.float64)
    got = roi_align(feat, rois, 2, 1.0, 0, True)  # zero width: ceil(0 / 2) = 0 samples per bin
    assert got[0].abs().max().item() == 0.0
    torch.testing.assert_close(got, _align_reference(feat, rois, (2, 2), 1.0, 0, True), rtol=1e-12, atol=1e-12)


def test_roi_align_gradcheck_and_chunks(monkeypatch):
    g = torch.Generator().manual_seed(2)
    feat = torch.randn((2, 2, 6, 7), generator=g, dtype=torch.float64, requires_grad=True)
    rois = _rois(g, 5, 2, 90.0)
    for ratio in (2, 0):
        assert torch.autograd.gradcheck(lambda f, r=ratio: roi_align(f, rois, 2, 1 / 16, r, True), (feat,))
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (2, 3), 1 / 8, 1, False), (feat,))
    whole = roi_align(feat, rois, 2, 1 / 16, 2, True)
    monkeypatch.setattr(roi_ops, "CHUNK_ELEMENTS", 1)  # one RoI per chunk
    torch.testing.assert_close(roi_align(feat, rois, 2, 1 / 16, 2, True), whole, rtol=1e-14, atol=1e-14)


def test_roi_align_dtypes_and_empty():
    g = torch.Generator().manual_seed(4)
    feat = torch.randn((1, 3, 8, 8), generator=g)
    rois = _rois(g, 6, 1, 100.0).float()
    ref = roi_align(feat.double(), rois.double(), 4, 1 / 16)
    f32 = roi_align(feat, rois, 4, 1 / 16)
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), ref, rtol=1e-5, atol=1e-5)
    bf = roi_align(feat.bfloat16(), rois, 4, 1 / 16)
    assert bf.dtype == torch.bfloat16
    torch.testing.assert_close(bf.double(), ref, rtol=2e-2, atol=2e-2)
    empty = roi_align(feat, torch.zeros(0, 5), (4, 5), 1 / 16)
    assert empty.shape == (0, 3, 4, 5)


def _pool_reference(feat, rois, out, scale):
    """Fast R-CNN RoI max pooling and, for every output, the (image, channel, y, x) of its first arg-max."""

    def rnd(v):
        return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)

    _, c, h, w = feat.shape
    vals = feat.tolist()
    res = torch.zeros(len(rois), c, out, out, dtype=torch.float64)
    argmax = {}
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        b = int(b)
        sx, sy, ex, ey = rnd(x1 * scale), rnd(y1 * scale), rnd(x2 * scale), rnd(y2 * scale)
        rw, rh = max(ex - sx + 1, 1), max(ey - sy + 1, 1)
        for py in range(out):
            for px in range(out):
                hs = min(max(py * rh // out + sy, 0), h)  # floor(py * rh / out), exactly
                he = min(max(-(-(py + 1) * rh // out) + sy, 0), h)  # ceil((py + 1) * rh / out)
                ws = min(max(px * rw // out + sx, 0), w)
                we = min(max(-(-(px + 1) * rw // out) + sx, 0), w)
                if he <= hs or we <= ws:
                    continue
                for ch in range(c):
                    best, at = -math.inf, None
                    for yy in range(hs, he):
                        for xx in range(ws, we):
                            if vals[b][ch][yy][xx] > best:
                                best, at = vals[b][ch][yy][xx], (b, ch, yy, xx)
                    res[k, ch, py, px] = best
                    argmax[(k, ch, py, px)] = at
    return res, argmax


def test_roi_pool_matches_the_reference_and_routes_gradients_to_the_arg_max():
    g = torch.Generator().manual_seed(3)
    feat = torch.randn((2, 3, 8, 10), generator=g, dtype=torch.float64, requires_grad=True)
    rois = _rois(g, 14, 2, 150.0)
    rois[0, 1:] = torch.tensor([40.0, 24.0, 40.0, 24.0])  # a single-pixel RoI: every bin reads that pixel
    rois[1, 1:] = torch.tensor([200.0, 200.0, 260.0, 230.0])  # entirely off the map: all zeros
    rois[2, 1:] = torch.tensor([8.0, 8.0, 40.0, 40.0])  # x * scale = 0.5, 2.5: C rounding (half away from 0)
    got = RoIPool(3, 1 / 16)(feat, rois)
    want, argmax = _pool_reference(feat.detach(), rois, 3, 1 / 16)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(roi_pool(feat, rois, 3, 1 / 16), got)
    assert got[1].abs().max().item() == 0.0
    upstream = torch.rand(got.shape, generator=g, dtype=torch.float64)
    got.backward(upstream)
    expected = torch.zeros_like(feat)
    for (k, ch, py, px), at in argmax.items():
        expected[at] += upstream[k, ch, py, px]
    torch.testing.assert_close(feat.grad, expected, rtol=0, atol=1e-15)


def test_roi_pool_empty_and_rectangular():
    feat = torch.randn((1, 2, 6, 6))
    assert roi_pool(feat, torch.zeros(0, 5), (2, 3), 1.0).shape == (0, 2, 2, 3)
    out = roi_pool(feat, torch.tensor([[0.0, 0.0, 0.0, 5.0, 5.0]]), (2, 3), 1.0)
    # 6 rows into 2 bins of 3, 6 columns into 3 bins of 2
    assert torch.equal(out[0, :, 1, 2], feat[0, :, 3:6, 4:6].amax(dim=(1, 2)))
