"""Boxes: area, IoU against a pure-Python reference, clipping, small boxes, and the box coder round trip."""

import math

import pytest
import torch

from archc.detect.boxes import BoxCoder, box_area, box_iou, clip_boxes, small_boxes


def _boxes(n: int, g: torch.Generator, size: float = 100.0, dtype=torch.float64) -> torch.Tensor:
    xy = torch.rand((n, 2), generator=g, dtype=dtype) * size
    wh = torch.rand((n, 2), generator=g, dtype=dtype) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


def _iou_reference(p, q):
    iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
    ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
    inter = iw * ih
    union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
    return inter / union if union > 0 else 0.0


def test_area_and_iou_match_a_pure_python_reference():
    g = torch.Generator().manual_seed(0)
    a, b = _boxes(17, g), _boxes(9, g)
    b[0] = a[3]  # an identical pair: IoU exactly 1
    want = torch.tensor([[_iou_reference(p, q) for q in b.tolist()] for p in a.tolist()], dtype=torch.float64)
    got = box_iou(a, b)
    assert got.shape == (17, 9)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    assert got[3, 0].item() == 1.0
    assert box_area(a).tolist() == pytest.approx([(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in a.tolist()])


def test_iou_hand_values_degenerate_and_empty():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [3.0, 3.0, 3.0, 8.0]])
    iou = box_iou(a, a)
    assert iou[0, 1].item() == pytest.approx(25 / 175)
    assert iou[0, 0].item() == 1.0 and iou[1, 1].item() == 1.0
    assert iou[2, 2].item() == 0.0  # a zero-area box overlaps nothing, not even itself (no NaN)
    assert torch.isfinite(iou).all()
    assert box_area(a).tolist() == [100.0, 100.0, 0.0]
    assert box_area(torch.tensor([[5.0, 5.0, 1.0, 9.0]])).tolist() == [0.0]  # inverted box: no negative area
    assert box_iou(a, torch.zeros(0, 4)).shape == (3, 0)
    assert box_iou(torch.zeros(0, 4), a).shape == (0, 3)


def test_clip_and_small_boxes():
    boxes = torch.tensor([[-5.0, 3.0, 20.0, 50.0], [1.0, 2.0, 3.0, 4.0]])
    assert clip_boxes(boxes, 30, 12).tolist() == [[0.0, 3.0, 12.0, 30.0], [1.0, 2.0, 3.0, 4.0]]
    # any leading shape: [N, K*4] class-specific boxes are [N, K, 4]
    per_class = torch.tensor([[[-1.0, -1.0, 40.0, 40.0], [2.0, 2.0, 5.0, 5.0]]])
    assert clip_boxes(per_class, 10, 20).tolist() == [[[0.0, 0.0, 20.0, 10.0], [2.0, 2.0, 5.0, 5.0]]]
    mask = small_boxes(torch.tensor([[0.0, 0.0, 2.0, 10.0], [0.0, 0.0, 10.0, 2.9], [0.0, 0.0, 5.0, 5.0]]), 3)
    assert mask.tolist() == [True, True, False]
    assert small_boxes(torch.zeros(0, 4), 1).shape == (0,)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_round_trip(weights):
    g = torch.Generator().manual_seed(1)
    boxes, anchors = _boxes(200, g), _boxes(200, g)
    coder = BoxCoder(weights)
    deltas = coder.encode(boxes, anchors)
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, rtol=0, atol=1e-9)
    # the encoding itself, from its definition
    aw, gw = anchors[0, 2] - anchors[0, 0], boxes[0, 2] - boxes[0, 0]
    ax, gx = anchors[0, 0] + aw / 2, boxes[0, 0] + gw / 2
    assert deltas[0, 0].item() == pytest.approx(weights[0] * float((gx - ax) / aw), rel=1e-12)
    assert deltas[0, 2].item() == pytest.approx(weights[2] * math.log(float(gw / aw)), rel=1e-12)
    # K boxes per anchor (one per class) decode independently
    two = coder.decode(torch.cat([deltas, torch.zeros_like(deltas)], dim=1), anchors)
    assert two.shape == (200, 8)
    torch.testing.assert_close(two[:, :4], boxes, rtol=0, atol=1e-9)
    torch.testing.assert_close(two[:, 4:], anchors, rtol=0, atol=1e-9)


def test_box_coder_clamps_huge_sizes_only():
    coder = BoxCoder()
    a = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    huge = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 1e6]]), a)
    assert torch.isfinite(huge).all()
    assert (huge[0, 2] - huge[0, 0]).item() == pytest.approx(10 * 1000 / 16, rel=1e-5)
    assert (huge[0, 3] - huge[0, 1]).item() == pytest.approx(20 * 1000 / 16, rel=1e-5)
    # the clamp acts on the unweighted delta, and shrinking is never clamped
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0), clamp=math.log(4.0))
    out = coder.decode(torch.tensor([[0.0, 0.0, 5 * 3.0, 5 * -3.0]], dtype=torch.float64), a.double())
    assert (out[0, 2] - out[0, 0]).item() == pytest.approx(40.0)
    assert (out[0, 3] - out[0, 1]).item() == pytest.approx(20.0 * math.exp(-3.0))


def test_box_coder_empty_and_dtype():
    coder = BoxCoder()
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 12), torch.zeros(0, 4)).shape == (0, 12)
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    # deltas decide the output dtype (the head's float32 deltas on float64 proposals)
    assert coder.decode(torch.zeros(2, 4), torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 2).double()).dtype == torch.float32
