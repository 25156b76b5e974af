"""FusedConv2d's cache of oneDNN-reordered weights: same outputs, per input shape, cleared by new weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import archc
from archc.bench.reference import randomise

SPEC = Path(__file__).resolve().parents[2] / "specs" / "cifar" / "resnet20.arch"
SMALL = {"input_size": "3x16x16"}


def _convs(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if type(m).__name__ == "FusedConv2d"]


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    state = randomise(archc.compile(SPEC, overrides=SMALL), seed).state_dict()
    packed = archc.compile(SPEC, mode="eval", overrides=SMALL, weights=state)
    plain = archc.compile(SPEC, mode="eval", overrides=SMALL, weights=state)
    type(_convs(plain)[0]).prepack = False  # its own generated class: the other module keeps packing
    return packed, plain


def test_packed_weights_give_the_same_outputs_at_every_batch_size() -> None:
    packed, plain = _pair()
    if not type(_convs(packed)[0]).prepack:
        pytest.skip("this torch has no oneDNN weight reorder")
    with torch.inference_mode():
        for batch in (2, 1, 3, 2, 5, 6, 1):
            x = torch.randn(batch, 3, 16, 16)
            torch.testing.assert_close(packed(x), plain(x), rtol=1e-5, atol=1e-5)
    conv = _convs(packed)[0]
    shapes = conv.__dict__["_packed"][1]
    assert len(shapes) == conv.packed_shapes  # 5 shapes seen, the oldest dropped
    assert (2, 3, 16, 16) not in shapes and (1, 3, 16, 16) in shapes
    assert all(t.is_mkldnn for t in shapes.values())
    assert "_packed" not in str(list(packed.state_dict()))


def test_new_weights_clear_the_cache() -> None:
    packed, plain = _pair()
    other, _ = _pair(seed=3)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        packed(x)
        packed.load_state_dict(other.state_dict())
        plain.load_state_dict(other.state_dict())
        torch.testing.assert_close(packed(x), plain(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(packed(x), other(x), rtol=1e-5, atol=1e-5)
        _convs(packed)[0].weight.mul_(2.0)  # an in-place edit moves the version counter
        _convs(plain)[0].weight.mul_(2.0)
        torch.testing.assert_close(packed(x), plain(x), rtol=1e-5, atol=1e-5)


def test_deepcopy_drops_the_cache() -> None:
    packed, plain = _pair()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        packed(x)
        copied = copy.deepcopy(packed)
        assert "_packed" not in _convs(copied)[0].__dict__
        torch.testing.assert_close(copied(x), plain(x), rtol=1e-5, atol=1e-5)
