"""Pre-activation ResNet-164 and ResNet-1001 for CIFAR-10 (specs/cifar/preact_resnet164.arch,
specs/cifar/preact_resnet1001.arch; He et al. 2016) against a hand-written reference.

Parameters of one bottleneck unit of width w on cin input channels (convs have no bias):
    bn1 2*cin + conv1 cin*w + bn2 2*w + conv2 9*w*w + bn3 2*w + conv3 w*4w  = 2*cin + cin*w + 4*w + 13*w*w
plus, in the first unit of a stage, the projection conv cin*4w. Per stage, with n units:
    stage 1 (w=16): first (cin=16)  32 + 256 + 64 + 3,328 + 1,024    =  4,704; others (cin=64)   4,544
    stage 2 (w=32): first (cin=64)  128 + 2,048 + 128 + 13,312 + 8,192 = 23,808; others (cin=128) 17,792
    stage 3 (w=64): first (cin=128) 256 + 8,192 + 256 + 53,248 + 32,768 = 94,720; others (cin=256) 70,400
and outside the stages conv1 3*16*9 = 432, the final BN 2*256 = 512, fc 256*10 + 10 = 2,570 (3,514).
    n = 18  (ResNet-164):  81,952 + 326,272 + 1,291,520 + 3,514 =  1,703,258
    n = 111 (ResNet-1001): 504,544 + 1,980,928 + 7,838,720 + 3,514 = 10,327,706
The paper's Table 3 says 1.7M and 10.2M: its 10.2M matches the conv and fc weights alone
(10,178,490; the BN affine parameters are 149,216 more), which for ResNet-164 round to 1.7M either way
(1,679,034 and 1,703,258).
"""

from __future__ import annotations

import warnings

import pytest

from archc.api import build
from archc.errors import ArchcWarning
from tests.zoo import spec_checks as check
from tests.zoo.reference_preact import PreActResNet

R164 = "cifar/preact_resnet164.arch"
R1001 = "cifar/preact_resnet1001.arch"
OUTSIDE_STAGES = 432 + 512 + 2_570


def test_preact_resnet164_parameter_count() -> None:
    g = check.graph(R164)
    assert g.params() == 1_703_258
    assert check.stage_params(g, "layer1.") == 4_704 + 17 * 4_544
    assert check.stage_params(g, "layer2.") == 23_808 + 17 * 17_792
    assert check.stage_params(g, "layer3.") == 94_720 + 17 * 70_400


def test_preact_resnet1001_parameter_count() -> None:
    g = check.graph(R1001)
    assert g.params() == 10_327_706
    stages = [4_704 + 110 * 4_544, 23_808 + 110 * 17_792, 94_720 + 110 * 70_400]
    assert [check.stage_params(g, f"layer{s}.") for s in (1, 2, 3)] == stages
    assert sum(stages) + OUTSIDE_STAGES == 10_327_706


@pytest.mark.parametrize("spec, units", [(R164, 18), (R1001, 111)])
def test_the_projection_reads_the_pre_activated_input(spec: str, units: int) -> None:
    # The first unit of each stage projects its BN-ReLU output (`-> preact` / `from preact`), not
    # its input; every other unit adds its input itself. The spec names no unread value (no warning).
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchcWarning)
        graph = build(check.SPECS / spec, passes=[], lower=False).graph
    projections = {n.name: n for n in graph.nodes() if n.name.endswith(".downsample")}
    assert sorted(projections) == [f"layer{s}.0.downsample" for s in (1, 2, 3)]
    for name, node in projections.items():
        unit = name.removesuffix(".downsample")
        (pre,) = node.inputs
        assert graph.node(pre).op == "relu" and graph.node(pre).inputs == (f"{unit}.bn1",)
        assert graph.node(f"{unit}.add").inputs == (f"{unit}.conv3", name)
    for s in (1, 2, 3):
        last = f"layer{s}.{units - 1}"
        before = f"layer{s}.{units - 2}.add"
        assert graph.node(f"{last}.add").inputs == (f"{last}.conv3", before)
    assert len([n for n in graph.nodes() if n.op == "add"]) == 3 * units


def test_preact_resnet164_state_dict_matches_the_reference() -> None:
    check.same_state_layout(R164, PreActResNet(18))


def test_preact_resnet164_equals_the_reference_in_float64() -> None:
    # 16x16: stage 3 runs on 4x4 maps; batch 2
    check.equivalent(R164, PreActResNet(18), (3, 16, 16))


def test_preact_resnet164_eval_pipeline_matches_the_unoptimised_net() -> None:
    check.eval_pipeline_matches(R164, (3, 16, 16))


@pytest.mark.slow
def test_preact_resnet1001_eval_pipeline_matches_the_unoptimised_net() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchcWarning)
        check.eval_pipeline_matches(R1001, (3, 8, 8), batch=1)
