"""Greedy NMS and per-group NMS against brute-force pure-Python references (ties, identical boxes, blocks)."""

import pytest
import torch

import archc.detect.nms as nms_module
from archc.detect.nms import batched_nms, nms


def _iou(p, q):
    iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
    ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
    inter = iw * ih
    union = max(0.0, p[2] - p[0]) * max(0.0, p[3] - p[1]) + max(0.0, q[2] - q[0]) * max(0.0, q[3] - q[1]) - inter
    return inter / union if union > 0 else 0.0


def _nms_reference(boxes, scores, thr):
    """The textbook loop: best remaining box first (ties: lower index), drop what overlaps a kept box."""
    rows, s = boxes.tolist(), scores.tolist()
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    keep = []
    for i in order:
        if all(_iou(rows[i], rows[j]) <= thr for j in keep):
            keep.append(i)
    return keep


def _batched_reference(boxes, scores, groups, thr):
    want = []
    for c in sorted(set(groups.tolist())):
        idx = [i for i, gi in enumerate(groups.tolist()) if gi == c]
        want += [idx[i] for i in _nms_reference(boxes[idx], scores[idx], thr)]
    s = scores.tolist()
    return sorted(want, key=lambda i: (-s[i], i))


def _case(seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand((n, 2), generator=g, dtype=torch.float64) * 60
    wh = torch.rand((n, 2), generator=g, dtype=torch.float64) * 30 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.randint(0, 6, (n,), generator=g).double()  # many ties
    boxes[5] = boxes[3]  # identical boxes, equal and different scores
    boxes[7] = boxes[3]
    scores[7] = scores[3]
    boxes[9] = torch.tensor([10.0, 10.0, 10.0, 20.0], dtype=torch.float64)  # zero area: suppresses nothing
    groups = torch.randint(0, 3, (n,), generator=g)
    return boxes, scores, groups


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_and_batched_nms_equal_brute_force(seed, thr):
    boxes, scores, groups = _case(seed, 70)
    got = nms(boxes, scores, thr)
    assert got.dtype == torch.long
    assert got.tolist() == _nms_reference(boxes, scores, thr)
    assert batched_nms(boxes, scores, groups, thr).tolist() == _batched_reference(boxes, scores, groups, thr)


@pytest.mark.parametrize("seed", range(3))
def test_across_blocks(monkeypatch, seed):
    # small blocks, so that suppression inside a block and from earlier blocks both happen many times
    monkeypatch.setattr(nms_module, "BLOCK", 7)
    boxes, scores, groups = _case(100 + seed, 150)
    scores = scores + torch.rand(150, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).round(
        decimals=1
    )
    for thr in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, thr).tolist() == _nms_reference(boxes, scores, thr)
        assert batched_nms(boxes, scores, groups, thr).tolist() == _batched_reference(boxes, scores, groups, thr)


def test_float32_and_threshold_edge():
    boxes, scores, _ = _case(7, 80)
    assert nms(boxes.float(), scores.float(), 0.5).tolist() == _nms_reference(boxes.float(), scores.float(), 0.5)
    # IoU exactly at the threshold is kept (only "greater than" suppresses)
    pair = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    assert nms(pair, torch.tensor([2.0, 1.0]), 0.5).tolist() == [0, 1]
    assert nms(pair, torch.tensor([2.0, 1.0]), 0.49).tolist() == [0]


def test_empty_single_and_all_groups_distinct():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).tolist() == []
    assert nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.3]), 0.5).tolist() == [0]
    same = torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 4)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9])
    assert nms(same, scores, 0.5).tolist() == [1]
    # groups never suppress each other, even for identical boxes
    assert batched_nms(same, scores, torch.tensor([0, 1, 2, 3]), 0.5).tolist() == [1, 3, 2, 0]
    assert batched_nms(same, scores, torch.tensor([5, 5, 2, 2]), 0.5).tolist() == [1, 3]


def test_large_input_matches_the_block_free_loop():
    # 3000 boxes over several default-size blocks; reference: the same greedy rule, one box at a time in torch
    g = torch.Generator().manual_seed(11)
    xy = torch.rand((3000, 2), generator=g) * 500
    boxes = torch.cat([xy, xy + torch.rand((3000, 2), generator=g) * 80 + 2], dim=1)
    scores = torch.rand(3000, generator=g)
    order = torch.argsort(scores, descending=True, stable=True)
    from archc.detect.boxes import box_iou

    iou = box_iou(boxes[order], boxes[order]) > 0.7
    alive = torch.ones(3000, dtype=torch.bool)
    for i in range(3000):
        if alive[i]:
            alive[i + 1 :] &= ~iou[i, i + 1 :]
    assert nms(boxes, scores, 0.7).tolist() == order[alive].tolist()
