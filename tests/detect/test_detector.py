"""The Faster R-CNN pieces: labelling and sampling, RPN, RoI heads, appendix-B options, the whole model."""

import pytest
import torch
from torch import nn

from archc.detect.config import DetectorConfig
from archc.detect.model import FasterRCNN
from archc.detect.roi_heads import RoIHeads, vote
from archc.detect.rpn import RPN
from archc.detect.sampling import match, sample
from archc.errors import TrainError

CFG = DetectorConfig().replace(anchor_sizes="16x32x64", roi_batch="64", rpn_post_nms_train="100")


def _tiny(global_context=False, refine=False):
    torch.manual_seed(0)
    trunk = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=4, padding=1)
    )
    head = nn.Sequential(nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    cfg = CFG.replace(global_context=global_context, box_refinement=refine)
    return FasterRCNN(trunk, head, 32, 48, 2, cfg, (4, 4))


def test_match_labels_and_the_best_anchor_rule():
    iou = torch.tensor([[0.9, 0.5, 0.2, 0.1], [0.0, 0.1, 0.25, 0.0]])
    idx, labels = match(iou, fg=0.7, bg=0.3, best_per_gt=False)
    assert labels.tolist() == [1, -1, 0, 0] and idx.tolist() == [0, 0, 1, 0]
    _, labels = match(iou, fg=0.7, bg=0.3, best_per_gt=True)
    assert labels.tolist() == [1, -1, 1, 0]  # anchor 2 is gt 1's best, though below fg
    _, none = match(torch.zeros(0, 4), 0.7, 0.3, True)
    assert none.tolist() == [0, 0, 0, 0]


def test_sampler_respects_batch_and_fraction():
    labels = torch.tensor([1] * 50 + [0] * 500 + [-1] * 10)
    pos, neg = sample(labels, 256, 0.25, torch.Generator().manual_seed(0))
    assert (len(pos), len(neg)) == (50, 206)  # too few positives: negatives fill the batch
    pos, neg = sample(torch.tensor([1] * 300 + [0] * 300), 256, 0.5, torch.Generator().manual_seed(0))
    assert (len(pos), len(neg)) == (128, 128) and len(set(pos.tolist())) == 128
    again = sample(torch.tensor([1] * 300 + [0] * 300), 256, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], pos)


def test_rpn_proposals_and_losses():
    rpn = RPN(8, CFG.replace(rpn_post_nms_test="30"))
    feats = torch.randn(2, 8, 6, 6)
    rpn.eval()
    props, losses = rpn(feats, [(96, 96), (80, 96)])
    assert losses == {} and all(len(p) <= 30 for p in props)
    assert props[1][:, 3].max() <= 80 and props[0].min() >= 0  # clipped to each image
    rpn.train()
    t = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    _, losses = rpn(feats, [(96, 96)] * 2, t, torch.Generator().manual_seed(0))
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box"} and losses["loss_rpn_box"] > 0
    losses["loss_rpn_cls"].backward()
    assert rpn.head.cls_logits.weight.grad.abs().sum() > 0


def test_global_context_doubles_the_sibling_inputs_and_voting():
    assert _tiny().roi_heads.cls_score.in_features == 48
    assert _tiny(global_context=True).roi_heads.cls_score.in_features == 96
    kept = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.6, 0.2, 0.9])
    voted = vote(kept, torch.tensor([1]), boxes, scores, torch.tensor([1, 1, 1]), 0.5)
    # (0.6 * box0 + 0.2 * box1) / 0.8; the far box does not vote
    torch.testing.assert_close(voted, torch.tensor([[0.5, 0.0, 10.5, 10.0]]))


@pytest.mark.parametrize(("ctx", "refine"), [(False, False), (True, True)])
def test_a_few_steps_fit_one_image(ctx, refine):
    model = _tiny(ctx, refine)
    img = torch.zeros(1, 3, 96, 96)
    img[:, :, 20:52, 30:62] = 1.0
    t = [{"boxes": torch.tensor([[30.0, 20.0, 62.0, 52.0]]), "labels": torch.tensor([2])}]
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    model.train()
    first = None
    for _ in range(40):
        losses = model(img, [(96, 96)], t, g)
        loss = sum(losses.values())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    model.eval()
    (d,) = model(img, [(96, 96)])
    assert set(d) == {"boxes", "scores", "labels"} and len(d["boxes"]) <= CFG.detections
    # multi-scale testing maps the boxes back to the original pixels
    (m,) = model.detect([img[0]], scales=(64, 96, 128))
    assert len(m["boxes"]) == 0 or (m["boxes"].max() <= 96.01 and m["boxes"].min() >= -0.01)


def test_config_parsing_and_errors():
    c = DetectorConfig().replace(anchor_sizes="32x64", test_scales="400,600", global_context="true", nms="0.4")
    assert (c.anchor_sizes, c.test_scales, c.global_context, c.nms) == ((32, 64), (400, 600), True, 0.4)
    with pytest.raises(TrainError, match="unknown detector setting"):
        DetectorConfig().replace(anchors="3")
    with pytest.raises(TrainError, match="pooler"):
        DetectorConfig().replace(pooler="max")


def test_roi_heads_pool_option():
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    h = RoIHeads(head, 8, 3, (4, 4), CFG.replace(pooler="pool"))
    h.eval()
    dets = h(torch.randn(1, 8, 6, 6), [torch.tensor([[0.0, 0.0, 40.0, 40.0], [10.0, 10.0, 90.0, 60.0]])], [(96, 96)])
    assert len(dets) == 1 and dets[0]["boxes"].shape[1] == 4
