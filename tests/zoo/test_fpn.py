"""The zoo's ResNet-50-FPN backbone: detectron2's count, FPN names and arithmetic.

The spec has the 26,852,416 parameters of detectron2's ResNet-50-FPN backbone (ResNet-50 without
fc, 1x1 laterals and 3x3 outputs with bias, max-pooled P6); its state_dict equals the hand-written
reference's (tests/zoo/reference_fpn.py) in keys and shapes; it returns p2..p6 as the reference
computes them in float64, in eval and in train mode; and the eval pipeline computes what the
unoptimised build does.
"""

from __future__ import annotations

import copy

import torch

import archc
from archc.api import build
from archc.bench.reference import randomise
from tests.zoo.reference_fpn import ResNet50FPN

SPEC = "zoo/resnet50_fpn"
SMALL = {"input_size": "3x64x64"}
LEVELS = ["p2", "p3", "p4", "p5", "p6"]


def batch(dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=dtype)


def test_parameter_count() -> None:
    assert build(SPEC, lower=False).graph.params() == 26_852_416


def test_state_dict_matches_reference() -> None:
    got = archc.compile(SPEC, overrides=SMALL).state_dict()
    want = ResNet50FPN().state_dict()
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}
    assert got["fpn_lateral2.weight"].shape == (256, 256, 1, 1)
    assert got["fpn_output5.bias"].shape == (256,)


def test_equals_reference_float64() -> None:
    want = randomise(ResNet50FPN()).double()
    got = archc.compile(SPEC, overrides=SMALL).double()
    got.load_state_dict(want.state_dict(), strict=True)
    x = batch(torch.float64)
    with torch.no_grad():
        for mode in ("eval", "train"):  # train: BN on batch statistics
            expected = getattr(want, mode)()(x)
            out = getattr(got, mode)()(x)
            assert list(out) == LEVELS
            assert [tuple(out[k].shape) for k in LEVELS] == [(2, 256, s, s) for s in (16, 8, 4, 2, 1)]
            for k in LEVELS:
                assert expected[k].abs().max() > 1e-3
                torch.testing.assert_close(out[k], expected[k], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got.state_dict(), want.state_dict(), rtol=1e-10, atol=1e-10)


def test_eval_pipeline_matches_unoptimised() -> None:
    plain = build(SPEC, overrides=SMALL, passes=[]).module
    state = randomise(copy.deepcopy(plain)).state_dict()
    plain.load_state_dict(state, strict=True)
    fast = archc.compile(SPEC, mode="eval", overrides=SMALL, weights=state)
    x = batch(torch.float32)
    with torch.no_grad():
        expected = plain.eval()(x)
        out = fast(x)
        for k in LEVELS:
            torch.testing.assert_close(out[k], expected[k], rtol=1e-4, atol=1e-4)
