"""Detection primitives: box coder round trip, anchors, NMS vs brute force, RoIAlign/RoIPool vs slow references."""

import math

import pytest
import torch

from archc.detect.anchors import AnchorGenerator
from archc.detect.boxes import BoxCoder, box_area, box_iou, clip_boxes, small_boxes
from archc.detect.nms import batched_nms, nms
from archc.detect.roi_ops import RoIAlign, roi_align, roi_pool


def _boxes(n, g, size=100.0, dtype=torch.float64):
    xy = torch.rand((n, 2), generator=g, dtype=dtype) * size
    wh = torch.rand((n, 2), generator=g, dtype=dtype) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_round_trip(weights):
    g = torch.Generator().manual_seed(0)
    boxes, anchors = _boxes(50, g), _boxes(50, g)
    coder = BoxCoder(weights)
    deltas = coder.encode(boxes, anchors)
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, rtol=0, atol=1e-9)
    # K boxes per anchor (one per class) decode independently
    two = coder.decode(torch.cat([deltas, torch.zeros_like(deltas)], dim=1), anchors)
    torch.testing.assert_close(two[:, :4], boxes, rtol=0, atol=1e-9)
    torch.testing.assert_close(two[:, 4:], anchors, rtol=0, atol=1e-9)


def test_box_coder_clamps_and_handles_empty():
    coder = BoxCoder()
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    huge = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), a)
    assert torch.isfinite(huge).all() and (huge[0, 2] - huge[0, 0]).item() == pytest.approx(10 * 1000 / 16)
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)


def test_iou_area_clip_small():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    iou = box_iou(a, a)
    assert iou[0, 1].item() == pytest.approx(25 / 175) and torch.allclose(iou.diag(), torch.ones(2))
    assert box_iou(a, torch.zeros(0, 4)).shape == (2, 0)
    assert box_area(a).tolist() == [100.0, 100.0]
    assert clip_boxes(torch.tensor([[-5.0, 3.0, 20.0, 50.0]]), 30, 12).tolist() == [[0.0, 3.0, 12.0, 30.0]]
    assert small_boxes(torch.tensor([[0.0, 0.0, 2.0, 10.0], [0.0, 0.0, 5.0, 5.0]]), 3).tolist() == [True, False]


def test_anchors_layout_sizes_ratios():
    gen = AnchorGenerator(sizes=(32, 64), ratios=(0.5, 1.0, 2.0), stride=16)
    assert gen.num_anchors == 6
    a = gen(3, 4)
    assert a.shape == (3 * 4 * 6, 4)
    grid = a.reshape(3, 4, 6, 4)
    centres = (grid[..., :2] + grid[..., 2:]) / 2
    # position (y, x) is centred on ((x + 0.5) * 16, (y + 0.5) * 16), for all its anchors
    assert torch.allclose(centres[2, 1], torch.tensor([[24.0, 40.0]] * 6))
    w = grid[0, 0, :, 2] - grid[0, 0, :, 0]
    h = grid[0, 0, :, 3] - grid[0, 0, :, 1]
    torch.testing.assert_close(w * h, torch.tensor([32.0**2] * 3 + [64.0**2] * 3))
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0] * 2))
    # matches a head output [N, A*k, H, W] -> [N, H, W, A, k]: flat index (y * W + x) * A + a
    assert torch.equal(a[(2 * 4 + 1) * 6 + 4], grid[2, 1, 4])


def _nms_reference(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep = []
    for i in order:
        if all(box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() <= thr for j in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_equals_brute_force(seed, thr):
    g = torch.Generator().manual_seed(seed)
    boxes = _boxes(60, g, size=60.0, dtype=torch.float32)
    scores = torch.randint(0, 8, (60,), generator=g).float()  # many ties
    boxes[5] = boxes[3]  # identical boxes
    assert nms(boxes, scores, thr).tolist() == _nms_reference(boxes, scores, thr)
    groups = torch.randint(0, 3, (60,), generator=g)
    want = []
    for c in range(3):
        idx = (groups == c).nonzero().flatten()
        want += [int(idx[i]) for i in _nms_reference(boxes[idx], scores[idx], thr)]
    want.sort(key=lambda i: (-float(scores[i]), i))
    assert batched_nms(boxes, scores, groups, thr).tolist() == want
    assert nms(torch.zeros(0, 4), torch.zeros(0), thr).tolist() == []


def _bilinear(f, y, x):
    c, h, w = f.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(c, dtype=f.dtype)
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
    return (
        (1 - ly) * (1 - lx) * f[:, yl, xl]
        + (1 - ly) * lx * f[:, yl, xh]
        + ly * (1 - lx) * f[:, yh, xl]
        + ly * lx * f[:, yh, xh]
    )


def _align_reference(feat, rois, out, scale, ratio, aligned):
    res = torch.zeros(len(rois), feat.shape[1], out, out, dtype=feat.dtype)
    off = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / out, rh / out
        gh = ratio if ratio > 0 else math.ceil(rh / out)
        gw = ratio if ratio > 0 else math.ceil(rw / out)
        for py in range(out):
            for px in range(out):
                acc = torch.zeros(feat.shape[1], dtype=feat.dtype)
                for iy in range(gh):
                    for ix in range(gw):
                        y = y1 + py * bh + (iy + 0.5) * bh / gh
                        x = x1 + px * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(feat[int(b)], y, x)
                res[k, :, py, px] = acc / max(gh * gw, 1)
    return res


def _rois(g, n, images, size):
    b = torch.randint(0, images, (n, 1), generator=g).double()
    # some RoIs reach past the image on every side
    return torch.cat([b, _boxes(n, g, size=size) - size * 0.15], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [1, 2, 0])
def test_roi_align_matches_the_direct_reference(aligned, ratio):
    g = torch.Generator().manual_seed(1)
    feat = torch.randn((2, 3, 9, 11), generator=g, dtype=torch.float64)
    rois = _rois(g, 12, 2, 140.0)
    got = roi_align(feat, rois, 3, 1 / 16 * 1.5, ratio, aligned)
    torch.testing.assert_close(
        got, _align_reference(feat, rois, 3, 1 / 16 * 1.5, ratio, aligned), rtol=1e-12, atol=1e-12
    )
    assert torch.equal(RoIAlign(3, 1 / 16 * 1.5, ratio, aligned)(feat, rois), got)


def test_roi_align_gradcheck_and_chunks(monkeypatch):
    g = torch.Generator().manual_seed(2)
    feat = torch.randn((1, 2, 6, 7), generator=g, dtype=torch.float64, requires_grad=True)
    rois = _rois(g, 4, 1, 90.0)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, 2, 1 / 16, 2, True), (feat,))
    whole = roi_align(feat, rois, 2, 1 / 16, 2, True)
    import archc.detect.roi_ops as ops

    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", 1)  # one RoI per chunk
    torch.testing.assert_close(roi_align(feat, rois, 2, 1 / 16, 2, True), whole)


def _pool_reference(feat, rois, out, scale):
    def rnd(v):
        return int(math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1))

    _, c, h, w = feat.shape
    res = torch.zeros(len(rois), c, out, out, dtype=feat.dtype)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy, ex, ey = rnd(x1 * scale), rnd(y1 * scale), rnd(x2 * scale), rnd(y2 * scale)
        rw, rh = max(ex - sx + 1, 1), max(ey - sy + 1, 1)
        for py in range(out):
            for px in range(out):
                hs = min(max(math.floor(py * rh / out) + sy, 0), h)
                he = min(max(math.ceil((py + 1) * rh / out) + sy, 0), h)
                ws = min(max(math.floor(px * rw / out) + sx, 0), w)
                we = min(max(math.ceil((px + 1) * rw / out) + sx, 0), w)
                if he > hs and we > ws:
                    res[k, :, py, px] = feat[int(b), :, hs:he, ws:we].amax(dim=(1, 2))
    return res


def test_roi_pool_matches_the_reference_and_routes_gradients_to_the_max():
    g = torch.Generator().manual_seed(3)
    feat = torch.randn((2, 3, 8, 10), generator=g, dtype=torch.float64, requires_grad=True)
    rois = _rois(g, 15, 2, 150.0)
    got = roi_pool(feat, rois, 4, 1 / 16)
    want = _pool_reference(feat.detach(), rois, 4, 1 / 16)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    got.sum().backward()
    # each output element sends its gradient to one input element that holds its value
    grad = feat.grad
    # (an empty bin is 0 and sends nothing; with random features no real maximum is exactly 0)
    assert grad.sum().item() == pytest.approx(float((want != 0).sum()))
    nz = grad.nonzero()
    vals = feat.detach()[nz[:, 0], nz[:, 1], nz[:, 2], nz[:, 3]]
    assert all(bool((want == v).any()) for v in vals)
