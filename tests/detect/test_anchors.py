"""Anchors: count, the (row, column, anchor) layout of an RPN head's output, areas, ratios, centres, cache."""

import pytest
import torch

from archc.detect.anchors import AnchorGenerator


def test_cell_anchors_areas_ratios_and_order():
    gen = AnchorGenerator(sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0), stride=16)
    assert gen.num_anchors == 9
    cell = gen.cell_anchors()
    assert cell.shape == (9, 4)
    w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    # size-major, then ratio (height / width); every anchor has area size^2
    torch.testing.assert_close(w * h, torch.tensor([s * s for s in (128.0, 256.0, 512.0) for _ in range(3)]).double())
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0] * 3).double())
    torch.testing.assert_close(cell[:, :2] + cell[:, 2:], torch.zeros(9, 2).double())  # centred on (0, 0)


def test_grid_layout_matches_a_permuted_head_output():
    gen = AnchorGenerator(sizes=(32, 64), ratios=(0.5, 1.0, 2.0), stride=16)
    hgt, wid, a_n = 3, 5, gen.num_anchors
    anchors = gen(hgt, wid)
    assert anchors.shape == (hgt * wid * a_n, 4) and anchors.dtype == torch.float32
    cell = gen.cell_anchors().float()
    # an RPN head's [1, A*4, H, W] output, permuted to [1, H, W, A, 4] and reshaped to [1, H*W*A, 4]: build a
    # fake output whose value at (anchor a, row y, column x) names that anchor, and check the flat order
    head = torch.zeros(1, a_n * 4, hgt, wid)
    for a in range(a_n):
        for y in range(hgt):
            for x in range(wid):
                head[0, a * 4 : a * 4 + 4, y, x] = cell[a] + torch.tensor([x + 0.5, y + 0.5, x + 0.5, y + 0.5]) * 16
    flat = head.view(1, a_n, 4, hgt, wid).permute(0, 3, 4, 1, 2).reshape(1, hgt * wid * a_n, 4)[0]
    torch.testing.assert_close(anchors, flat)
    # and the explicit index formula (y * W + x) * A + a
    y, x, a = 2, 3, 5  # size 64, ratio 2: width 64 / sqrt(2)
    i = (y * wid + x) * a_n + a
    centre = (anchors[i, :2] + anchors[i, 2:]) / 2
    assert centre.tolist() == [(x + 0.5) * 16, (y + 0.5) * 16]
    assert (anchors[i, 2] - anchors[i, 0]).item() == pytest.approx(64 / 2**0.5, rel=1e-6)


def test_centres_lie_on_the_stride_grid():
    gen = AnchorGenerator(sizes=(100,), ratios=(1.0,), stride=8)
    anchors = gen(4, 6).double()
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).view(4, 6, 2)
    xs = (torch.arange(6).double() + 0.5) * 8
    ys = (torch.arange(4).double() + 0.5) * 8
    torch.testing.assert_close(centres[..., 0], xs[None, :].expand(4, 6))
    torch.testing.assert_close(centres[..., 1], ys[:, None].expand(4, 6))


def test_cache_dtype_and_empty_map():
    gen = AnchorGenerator()
    first = gen(2, 3)
    assert gen(2, 3) is first  # cached per (h, w, device, dtype)
    as64 = gen(2, 3, dtype=torch.float64)
    assert as64.dtype == torch.float64 and as64 is not first
    torch.testing.assert_close(as64.float(), first)
    assert gen(0, 4).shape == (0, 4)
