"""ShuffleNet V2 1.0x (specs/zoo/shufflenet_v2_x1_0.arch) against a hand-written torchvision-structured
reference: exercises chunk, concat branches and channel_shuffle."""

from __future__ import annotations

from tests.zoo import spec_checks as check
from tests.zoo.reference_shufflenet import ShuffleNetV2

SPEC = "zoo/shufflenet_v2_x1_0.arch"


def test_shufflenet_v2_x1_0_has_torchvisions_parameter_count() -> None:
    assert check.params(SPEC) == 2_278_604
    assert check.params(SPEC, {"num_classes": 10}) == 2_278_604 - 990 * 1025


def test_shufflenet_v2_x1_0_state_dict_is_torchvisions() -> None:
    ref = ShuffleNetV2()
    check.same_state_layout(SPEC, ref)
    keys = ref.state_dict()
    # a downsampling unit has both branches, a stride-1 unit only branch2
    assert "stage2.0.branch1.0.weight" in keys and "stage2.0.branch1.3.running_var" in keys
    assert "stage2.1.branch2.7.weight" not in keys and "stage2.1.branch2.6.weight" in keys
    assert not any(k.startswith("stage2.1.branch1.") for k in keys)
    assert tuple(keys["stage3.0.branch2.3.weight"].shape) == (116, 1, 3, 3)  # depthwise
    assert tuple(keys["conv5.0.weight"].shape) == (1024, 464, 1, 1)


def test_shufflenet_v2_x1_0_equals_the_reference_in_float64() -> None:
    # 64x64: stage4 and conv5 run on 2x2 maps, enough for train-mode BN with batch 2
    check.equivalent(SPEC, ShuffleNetV2(), (3, 64, 64))


def test_shufflenet_v2_x1_0_eval_pipeline_matches_the_unoptimised_net() -> None:
    check.eval_pipeline_matches(SPEC, (3, 64, 64))
