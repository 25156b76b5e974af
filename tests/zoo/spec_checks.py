"""Checks every zoo spec gets: its exact parameter count, its state_dict against a hand-written
reference, float64 equivalence with it, and the eval pipeline against the unoptimised net.

The equivalence and pipeline checks are the ones the ResNet specs get
(tests/backends/test_torch_equivalence.py, tests/passes/test_fold_bn.py); this module points
them at a zoo spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from archc.api import build
from archc.ir import Graph
from tests.backends.test_torch_equivalence import check_all, make_pair
from tests.passes.test_fold_bn import optimised, unoptimised

SPECS = Path(__file__).resolve().parents[2] / "specs"
EVAL_TOL = 1e-4  # the folded, fused float32 eval net against the unoptimised one


def graph(spec: str, overrides: Mapping[str, Any] | None = None) -> Graph:
    """The spec's IR after the train pipeline (elaborated only, nothing lowered)."""
    return build(SPECS / spec, overrides=overrides, lower=False).graph


def params(spec: str, overrides: Mapping[str, Any] | None = None) -> int:
    """The learnable parameters of a spec."""
    return graph(spec, overrides).params()


def stage_params(g: Graph, prefix: str) -> int:
    """The parameters of the layers whose names start with `prefix` (e.g. "layer1.")."""
    return sum(n.params for n in g.nodes() if n.name.startswith(prefix))


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Every state_dict key with its tensor's shape."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def same_state_layout(spec: str, reference: torch.nn.Module, overrides: Mapping[str, Any] | None = None) -> None:
    """The compiled spec has exactly the reference's state_dict keys, in its order, with its shapes."""
    compiled = build(SPECS / spec, overrides=overrides).module
    want, got = shapes(reference), shapes(compiled)
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))[:10]
    assert got == want
    assert sum(p.numel() for p in compiled.parameters()) == sum(p.numel() for p in reference.parameters())


def equivalent(spec: str, reference: torch.nn.Module, input_size: tuple[int, int, int]) -> None:
    """Float64, the reference's random state loaded strictly: eval and train outputs, running stats
    and gradients agree to ~1e-10 (see tests/backends/test_torch_equivalence.check_all)."""
    overrides = {"input_size": "x".join(map(str, input_size))}
    ref, net = make_pair(str(SPECS / spec), reference, overrides)
    check_all(ref, net, input_size)


def eval_pipeline_matches(spec: str, input_size: tuple[int, int, int], batch: int = 2) -> None:
    """The eval pipeline's module (BN folded, ops fused), loaded from the unoptimised net's random
    state, gives the unoptimised (passes=[]) module's float32 outputs to 1e-4."""
    overrides = {"input_size": "x".join(map(str, input_size))}
    plain_build, plain, state = unoptimised(SPECS / spec, overrides, dtype=torch.float32)
    fast_build, fast = optimised(SPECS / spec, state, overrides=overrides, dtype=torch.float32)
    assert len(fast_build.graph) < len(plain_build.graph)  # the passes did rewrite something
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = plain.eval()(x), fast.eval()(x)
    assert want.abs().max() > 1e-3  # not a degenerate comparison
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, want, rtol=EVAL_TOL, atol=EVAL_TOL * scale)
