"""The zoo's ResNet family: ResNeXt-50 32x4d, ResNeXt-101 32x8d, Wide ResNet-50-2, ResNet-50-D, SE-ResNet-50.

Each spec has the exact parameter count of torchvision's (or timm's) model at 1000 classes, 224x224;
its state_dict keys and shapes equal the hand-written reference's (tests/zoo/reference_resnet_family.py);
ResNeXt-50, SE-ResNet-50 and ResNet-50-D compute what the reference computes, in float64, in eval and
in train mode; and the eval pipeline (BN folded, ops fused) computes what the unoptimised build does.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import pytest
import torch

import archc
from archc.api import build
from archc.bench.reference import randomise
from tests.zoo import reference_resnet_family as ref

# catalogue name -> (parameters at 1000 classes and 224x224, the hand-written reference)
SPECS: dict[str, tuple[int, Callable[..., torch.nn.Module]]] = {
    "zoo/resnext50_32x4d": (25_028_904, ref.resnext50_32x4d),
    "zoo/resnext101_32x8d": (88_791_336, ref.resnext101_32x8d),
    "zoo/wide_resnet50_2": (68_883_240, ref.wide_resnet50_2),
    "zoo/resnet50d": (25_576_264, ref.resnet50d),
    "zoo/seresnet50": (28_088_024, ref.seresnet50),
}
SMALL = "3x64x64"
BATCH = 2


@functools.cache
def compiled(spec: str) -> torch.nn.Module:
    """The spec at 1000 classes on a small input, built once for the structure tests (not modified)."""
    return archc.compile(spec, overrides={"input_size": SMALL})


def batch(size: str, dtype: torch.dtype) -> torch.Tensor:
    shape = tuple(int(d) for d in size.split("x"))
    return torch.randn(BATCH, *shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("spec", list(SPECS))
def test_parameter_count(spec: str) -> None:
    assert build(spec, lower=False).graph.params() == SPECS[spec][0]


@pytest.mark.parametrize("spec", ["zoo/resnext50_32x4d", "zoo/wide_resnet50_2", "zoo/resnet50d", "zoo/seresnet50"])
def test_state_dict_matches_reference(spec: str) -> None:
    got = compiled(spec).state_dict()
    want = SPECS[spec][1]().state_dict()
    assert list(got) == list(want)
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}


def test_names_follow_torchvision_and_timm() -> None:
    """The module paths that tell the variants apart, spelled as the libraries spell them."""
    resnext = compiled("zoo/resnext50_32x4d")
    assert resnext.get_submodule("layer1.0.conv2").groups == 32
    assert resnext.get_submodule("layer1.0.conv2").out_channels == 128
    wide = compiled("zoo/wide_resnet50_2")
    assert wide.get_submodule("layer4.0.conv2").out_channels == 1024
    d = dict(compiled("zoo/resnet50d").named_modules())
    assert isinstance(d["layer2.0.downsample.0"], torch.nn.AvgPool2d)
    assert isinstance(d["layer1.0.downsample.0"], torch.nn.Identity)  # timm: no pool at stride 1
    assert d["layer2.0.downsample.1"].stride == (1, 1)
    assert [d[f"conv1.{i}"].out_channels for i in (0, 3, 6)] == [32, 32, 64]
    se = compiled("zoo/seresnet50").state_dict()
    assert se["layer3.2.se.fc1.weight"].shape == (64, 1024, 1, 1)
    assert se["layer3.2.se.fc2.bias"].shape == (1024,)


@pytest.mark.parametrize(
    "spec, size",
    [
        ("zoo/resnext50_32x4d", SMALL),
        ("zoo/seresnet50", SMALL),
        # 72x72: layer3's first pool meets a 9x9 map, so ceil_mode makes partial 2x2 windows
        ("zoo/resnet50d", "3x72x72"),
    ],
)
def test_equals_reference_float64(spec: str, size: str) -> None:
    want = randomise(SPECS[spec][1](num_classes=10)).double()
    got = archc.compile(spec, overrides={"input_size": size, "num_classes": 10}).double()
    got.load_state_dict(want.state_dict(), strict=True)
    x = batch(size, torch.float64)
    with torch.no_grad():
        expected = want.eval()(x)
        assert expected.abs().max() > 1e-3  # not a degenerate comparison
        torch.testing.assert_close(got.eval()(x), expected, rtol=1e-10, atol=1e-10)
        # train mode: batch statistics, and the same running statistics afterwards
        torch.testing.assert_close(got.train()(x), want.train()(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got.state_dict(), want.state_dict(), rtol=1e-10, atol=1e-10)


def eval_pipeline_matches(spec: str, size: str) -> None:
    """The eval build, loaded from a random state of the unoptimised build, gives its outputs to 1e-4."""
    overrides = {"input_size": size, "num_classes": 10}
    plain = build(spec, overrides=overrides, passes=[]).module
    state = randomise(copy.deepcopy(plain)).state_dict()
    plain.load_state_dict(state, strict=True)
    fast = archc.compile(spec, mode="eval", overrides=overrides, weights=state)
    x = batch(size, torch.float32)
    with torch.no_grad():
        expected = plain.eval()(x)
        assert expected.abs().max() > 1e-3
        torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec", ["zoo/resnext50_32x4d", "zoo/wide_resnet50_2", "zoo/resnet50d", "zoo/seresnet50"])
def test_eval_pipeline_matches_unoptimised(spec: str) -> None:
    eval_pipeline_matches(spec, SMALL)


@pytest.mark.slow
def test_eval_pipeline_matches_unoptimised_resnext101() -> None:
    eval_pipeline_matches("zoo/resnext101_32x8d", "3x32x32")
