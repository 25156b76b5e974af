"""EfficientNet-B0: exact count, torchvision's keys, float64 equivalence, eval pipeline, stochastic depth."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.api import build
from archc.bench.reference import randomise
from tests.zoo import reference_mobile as ref
from tests.zoo.mobile_checks import SMALL, equivalence_error, params, pipeline_error, shapes

B0 = "zoo/efficientnet_b0"


def test_efficientnet_b0_params():
    assert params(B0) == 5_288_548  # torchvision efficientnet_b0's num_params


def test_efficientnet_b0_keys_are_torchvision_s():
    assert shapes(archc.compile(B0)) == shapes(ref.EfficientNetB0())


@pytest.mark.parametrize("train", [False, True])
def test_efficientnet_b0_float64_equivalence(train):
    reference = ref.EfficientNetB0(num_classes=10, dropout=0.0, drop_path=0.0)
    assert equivalence_error(B0, reference, train, {"dropout": 0.0, "stochastic_depth": 0.0}) < 1e-10


def test_efficientnet_b0_eval_pipeline():
    assert pipeline_error(B0) < 1e-4


def test_efficientnet_b0_stochastic_depth_rises_linearly():
    # block k of the 16 drops its residual branch with probability 0.2 * k / 16, as torchvision's;
    # blocks that change shape have no shortcut and so no stochastic depth
    got = {n.name: n.attrs["p"] for n in build(B0, lower=False).graph.nodes() if n.op == "drop_path"}
    blocks = [
        f"features.{s}.{i}" for s, stage in enumerate(ref.EfficientNetB0().features[1:8], 1) for i in range(len(stage))
    ]
    want = {
        f"{name}.drop_path": 0.2 * k / 16
        for k, name in enumerate(blocks)
        if name.split(".")[2] != "0" or name == "features.5.0"
    }
    want.pop("features.5.0.drop_path")  # 80 -> 112 channels: no shortcut either
    assert got == pytest.approx(want, abs=1e-15)
    assert len(got) == 9


def test_efficientnet_b0_stochastic_depth_drops_in_training():
    # at stochastic_depth=0.9 the deeper blocks drop most samples: two seeds give different
    # outputs in training, and eval mode ignores the masks
    overrides = {**SMALL, "input_size": "3x32x32", "dropout": 0.0, "stochastic_depth": 0.9}
    model = randomise(archc.compile(B0, overrides=overrides))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    runs = {}
    for mode, seed in (("train", 0), ("train", 1), ("eval", 0), ("eval", 1)):
        model.train(mode == "train")
        torch.manual_seed(seed)
        with torch.no_grad():
            runs[mode, seed] = model(x)
    assert not torch.allclose(runs["train", 0], runs["train", 1])
    assert torch.equal(runs["eval", 0], runs["eval", 1])
