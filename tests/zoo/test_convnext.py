"""The zoo's ConvNeXt-T: torchvision's count, names and arithmetic.

The spec has torchvision convnext_tiny's 28,589,128 parameters at 1000 classes; its state_dict
keys and shapes equal the hand-written reference's (tests/zoo/reference_convnext.py), so a
torchvision checkpoint loads with strict=True; it computes what the reference
computes in float64, in eval and in train mode (stochastic depth off); the eval pipeline computes
what the unoptimised build does; and stochastic depth grows linearly to 0.1 as in torchvision.
"""

from __future__ import annotations

import copy

import pytest
import torch

import archc
from archc.api import build
from archc.bench.reference import randomise
from tests.zoo.reference_convnext import ConvNeXtTiny

SPEC = "zoo/convnext_tiny"
SMALL = {"input_size": "3x64x64", "num_classes": 10}


def randomise_all(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """randomise() plus the LayerNorm affines and layer scales it leaves alone (1 and 1e-6 hide errors)."""
    randomise(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            owner = model.get_submodule(name.rpartition(".")[0])
            if name.endswith("layer_scale") or isinstance(owner, torch.nn.LayerNorm):
                if name.endswith("bias"):
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.5 + torch.rand(p.shape, generator=g))
    return model


def test_parameter_count() -> None:
    assert build(SPEC, lower=False).graph.params() == 28_589_128


def test_state_dict_matches_reference() -> None:
    got = archc.compile(SPEC, overrides=SMALL).state_dict()
    want = ConvNeXtTiny(num_classes=10).state_dict()
    assert list(got) == list(want)
    assert got["features.1.0.layer_scale"].shape == (96, 1, 1)
    assert got["features.1.0.block.3.weight"].shape == (384, 96)  # nn.Linear's, not a 1x1 conv's
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}


def test_equals_reference_float64() -> None:
    want = randomise_all(ConvNeXtTiny(num_classes=10, drop_path_rate=0.0)).double()
    got = archc.compile(SPEC, overrides={**SMALL, "drop_path_step": 0.0}).double()
    got.load_state_dict(want.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        expected = want.eval()(x)
        assert expected.abs().max() > 1e-3
        torch.testing.assert_close(got.eval()(x), expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got.train()(x), want.train()(x), rtol=1e-10, atol=1e-10)


def test_stochastic_depth_grows_linearly_to_a_tenth() -> None:
    model = archc.compile(SPEC, overrides=SMALL)
    probs = [m.p for name, m in model.named_modules() if name.endswith(".stochastic_depth")]
    assert len(probs) == 18
    ref = [m.p for m in ConvNeXtTiny().modules() if type(m).__name__ == "StochasticDepth"]
    assert probs == pytest.approx(ref, abs=1e-15)
    assert probs[0] == 0.0 and probs[-1] == pytest.approx(0.1)


def test_eval_pipeline_matches_unoptimised() -> None:
    plain = build(SPEC, overrides=SMALL, passes=[]).module
    state = randomise_all(copy.deepcopy(plain)).state_dict()
    plain.load_state_dict(state, strict=True)
    fast = archc.compile(SPEC, mode="eval", overrides=SMALL, weights=state)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = plain.eval()(x)
        assert expected.abs().max() > 1e-3
        torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)
