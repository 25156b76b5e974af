"""The zoo's ResNet family: ResNeXt-50 32x4d, ResNeXt-101 32x8d, Wide ResNet-50-2, ResNet-50-D, SE-ResNet-50.

Each spec has the exact parameter count of torchvision's (or timm's) model at 1000 classes, 224x224;
its state_dict keys and shapes equal the hand-written reference's (tests/zoo/reference_resnet_family.py);
ResNeXt-50, SE-ResNet-50 and ResNet-50-D compute what the reference computes, in float64, in eval and
in train mode; and the eval pipeline (BN folded, ops fused) computes what the unoptimised build does.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from archc.api import build
from tests.zoo import reference_resnet_family as ref
from tests.zoo import spec_checks as check

# spec -> (parameters at 1000 classes and 224x224, the hand-written reference)
SPECS: dict[str, tuple[int, Callable[..., torch.nn.Module]]] = {
    "zoo/resnext50_32x4d.arch": (25_028_904, ref.resnext50_32x4d),
    "zoo/resnext101_32x8d.arch": (88_791_336, ref.resnext101_32x8d),
    "zoo/wide_resnet50_2.arch": (68_883_240, ref.wide_resnet50_2),
    "zoo/resnet50d.arch": (25_576_264, ref.resnet50d),
    "zoo/seresnet50.arch": (28_088_024, ref.seresnet50),
}
SMALL = (3, 64, 64)


@pytest.mark.parametrize("spec", list(SPECS))
def test_parameter_count(spec: str) -> None:
    assert check.params(spec) == SPECS[spec][0]


@pytest.mark.parametrize(
    "spec", ["zoo/resnext50_32x4d.arch", "zoo/wide_resnet50_2.arch", "zoo/resnet50d.arch", "zoo/seresnet50.arch"]
)
def test_state_dict_matches_reference(spec: str) -> None:
    check.same_state_layout(spec, SPECS[spec][1](), {"input_size": "3x64x64"})


def test_names_follow_torchvision_and_timm() -> None:
    """The module paths that tell the variants apart, spelled as the libraries spell them."""

    def modules(spec: str) -> dict[str, torch.nn.Module]:
        return dict(
            build(check.SPECS / spec, overrides={"input_size": "3x64x64", "num_classes": 10}).module.named_modules()
        )

    resnext = modules("zoo/resnext50_32x4d.arch")
    assert (resnext["layer1.0.conv2"].groups, resnext["layer1.0.conv2"].out_channels) == (32, 128)
    assert modules("zoo/wide_resnet50_2.arch")["layer4.0.conv2"].out_channels == 1024
    d = modules("zoo/resnet50d.arch")
    pool = d["layer2.0.downsample.0"]
    assert isinstance(pool, torch.nn.AvgPool2d) and pool.ceil_mode and not pool.count_include_pad
    assert isinstance(d["layer1.0.downsample.0"], torch.nn.Identity)  # timm: no pool at stride 1
    assert d["layer2.0.downsample.1"].stride == (1, 1)
    assert [d[f"conv1.{i}"].out_channels for i in (0, 3, 6)] == [32, 32, 64]
    se = modules("zoo/seresnet50.arch")
    assert (se["layer3.2.se.fc1"].out_channels, se["layer3.2.se.fc2"].out_channels) == (64, 1024)
    assert se["layer3.2.se.fc1"].bias is not None and se["layer3.2.se.fc2"].bias is not None


@pytest.mark.parametrize(
    "spec, size",
    [
        ("zoo/resnext50_32x4d.arch", SMALL),
        ("zoo/seresnet50.arch", SMALL),
        # 72x72: layer3's and layer4's pools meet 9x9 and 5x5 maps, so ceil_mode makes partial windows
        ("zoo/resnet50d.arch", (3, 72, 72)),
    ],
)
def test_equals_reference_float64(spec: str, size: tuple[int, int, int]) -> None:
    check.equivalent(spec, SPECS[spec][1](), size)


@pytest.mark.parametrize(
    "spec", ["zoo/resnext50_32x4d.arch", "zoo/wide_resnet50_2.arch", "zoo/resnet50d.arch", "zoo/seresnet50.arch"]
)
def test_eval_pipeline_matches_unoptimised(spec: str) -> None:
    check.eval_pipeline_matches(spec, SMALL)


@pytest.mark.slow
def test_eval_pipeline_matches_unoptimised_resnext101() -> None:
    check.eval_pipeline_matches("zoo/resnext101_32x8d.arch", (3, 32, 32))
