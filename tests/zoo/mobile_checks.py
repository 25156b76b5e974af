"""Shared checks of the mobile zoo specs against their hand-written references."""

from __future__ import annotations

import torch
from torch import nn

import archc
from archc.api import build
from archc.bench.reference import randomise

SMALL = {"input_size": "3x64x64", "num_classes": 10}


def params(spec: str) -> int:
    """The spec's learnable parameters as archc counts them, at its defaults."""
    return build(spec, lower=False).graph.params()


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape, in state_dict order."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def equivalence_error(spec: str, reference: nn.Module, train: bool, overrides: dict) -> float:
    """Largest |spec - reference| in float64 on a 2x3x64x64 batch, the reference's random state loaded strictly.

    The outputs are compared, and after the forward the BN running statistics too (a train-mode
    forward updates them with each BN's momentum).
    """
    randomise(reference.double(), seed=3)
    model = archc.compile(spec, overrides={**SMALL, **overrides}).double()
    model.load_state_dict(reference.state_dict(), strict=True)
    model.train(train)
    reference.train(train)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        worst = (model(x) - reference(x)).abs().max().item()
    mine = model.state_dict()
    for key, value in reference.state_dict().items():
        if value.is_floating_point():
            worst = max(worst, (mine[key] - value).abs().max().item())
    return worst


def pipeline_error(spec: str) -> float:
    """Largest |eval pipeline - passes=[]| (float32, eval mode), both holding the same random weights."""
    plain = build(spec, passes=[], overrides=SMALL).module
    randomise(plain, seed=4)
    state = plain.state_dict()
    optimised = archc.compile(spec, mode="eval", overrides=SMALL, weights=state)
    plain.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = plain(x)
        return ((optimised(x) - want).abs().max() / max(1.0, want.abs().max().item())).item()
