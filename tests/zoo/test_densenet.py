"""DenseNet-121 (specs/zoo/densenet121.arch) against a hand-written torchvision-structured reference."""

from __future__ import annotations

from tests.zoo import spec_checks as check
from tests.zoo.reference_densenet import DenseNet

SPEC = "zoo/densenet121.arch"


def test_densenet121_has_torchvisions_parameter_count() -> None:
    assert check.params(SPEC) == 7_978_856
    assert check.params(SPEC, {"num_classes": 10}) == 7_978_856 - 990 * 1025


def test_densenet121_state_dict_is_torchvisions() -> None:
    # features.denseblock1.denselayer1.norm1.weight ... features.transition3.conv.weight,
    # features.norm5.running_var, classifier.bias: keys and shapes of the reference
    ref = DenseNet()
    check.same_state_layout(SPEC, ref)
    keys = ref.state_dict()
    assert "features.denseblock4.denselayer16.conv2.weight" in keys
    assert "features.transition1.conv.weight" in keys
    assert tuple(keys["classifier.weight"].shape) == (1000, 1024)


def test_densenet121_equals_the_reference_in_float64() -> None:
    # 64x64: the last dense block runs on 2x2 maps, enough for train-mode BN with batch 2
    check.equivalent(SPEC, DenseNet(), (3, 64, 64))


def test_densenet121_eval_pipeline_matches_the_unoptimised_net() -> None:
    check.eval_pipeline_matches(SPEC, (3, 64, 64))
