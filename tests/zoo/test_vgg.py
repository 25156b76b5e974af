"""The zoo's VGG-16-BN: torchvision's count, names and module tree, and its eval pipeline.

The spec has torchvision vgg16_bn's 138,365,992 parameters at 1000 classes; its state_dict keys
and shapes, in order, are the hand-written reference's (tests/zoo/reference_vgg.py); its
parameter-free layers are the same modules at the same indices; and the eval pipeline (BN folded)
computes what the unoptimised build does on a 32x32 input, where adaptive_avgpool(7x7) spreads a
1x1 map over 7x7 (so the classifier still sees 25088 features).
"""

from __future__ import annotations

import functools

import torch

import archc
from archc.api import build
from archc.bench.reference import randomise
from tests.zoo.reference_vgg import VGG16BN

SPEC = "zoo/vgg16_bn"
SMALL = {"input_size": "3x32x32", "num_classes": 10}


@functools.cache
def compiled() -> torch.nn.Module:
    return archc.compile(SPEC, overrides=SMALL)


def test_parameter_count() -> None:
    assert build(SPEC, lower=False).graph.params() == 138_365_992


def test_state_dict_matches_reference() -> None:
    got = compiled().state_dict()
    with torch.device("meta"):  # shapes only: no 100M-parameter allocation
        want = VGG16BN(num_classes=10).state_dict()
    assert list(got) == list(want)
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}
    assert got["classifier.0.weight"].shape == (4096, 25088)


def test_module_tree_matches_reference() -> None:
    with torch.device("meta"):
        want = {name: type(m) for name, m in VGG16BN().named_modules() if name.count(".") == 1}
    # unoptimised: the train pipeline fuses each BN with its ReLU, so features.2, ... are gone there
    plain = build(SPEC, overrides=SMALL, passes=[]).module
    got = {name: type(m) for name, m in plain.named_modules() if name.count(".") == 1}
    assert got == want  # features.43 is the last MaxPool2d, classifier.2 a Dropout, ...


def test_eval_pipeline_matches_unoptimised() -> None:
    plain = randomise(build(SPEC, overrides=SMALL, passes=[]).module)
    state = plain.state_dict()
    fast = archc.compile(SPEC, mode="eval", overrides=SMALL, weights=state)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    pooled = []
    plain.avgpool.register_forward_hook(lambda _m, args, out: pooled.append((args[0].shape, out.shape)))
    with torch.no_grad():
        expected = plain.eval()(x)
        assert pooled == [((2, 512, 1, 1), (2, 512, 7, 7))]
        assert expected.abs().max() > 1e-3
        torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)
