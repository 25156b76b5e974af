"""fold_bn: conv -> bn pairs become one fused_conv, and only where that is exact.

Every case checks the rewrite (or its absence), that the graph lints, and that the optimised
module, loaded from a random state_dict in the unoptimised module's key space (folded on
load), gives the unoptimised module's eval-mode outputs. The helpers here are shared by the
other pass tests.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import archc
from archc.api import Build, build, load_weights
from archc.cli import main
from archc.ir import Graph
from archc.passes import PIPELINES
from tests import reference_resnet as ref

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
F64 = {"rtol": 1e-10, "atol": 1e-10}
F32 = {"rtol": 1e-5, "atol": 1e-5}
TOL = {torch.float64: F64, torch.float32: F32}


# --- shared helpers -----------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small nets on one thread: on a shared 2-core machine intra-op threads mostly wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_state(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state_dict for `module` (see archc.bench.reference.randomise); `module` is untouched."""
    return ref.randomise(copy.deepcopy(module), seed).state_dict()


def unoptimised(
    spec: str | Path, overrides: Mapping[str, Any] | None = None, dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[Build, torch.nn.Module, dict[str, torch.Tensor]]:
    """The spec with no passes, in `dtype`, loaded with a random state (returned too)."""
    b = build(spec, overrides=overrides, passes=[])
    b.graph.lint()
    module = b.module.to(dtype)
    state = random_state(module, seed)
    module.load_state_dict(state, strict=True)
    return b, module.eval(), state


def optimised(
    spec: str | Path,
    state: Mapping[str, torch.Tensor],
    passes: list[str] | None = None,
    mode: str = "eval",
    overrides: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Build, torch.nn.Module]:
    """The spec through `passes` (default: the `mode` pipeline), loaded from the unoptimised `state`."""
    b = build(spec, mode=mode, overrides=overrides, passes=passes)
    b.graph.lint()
    module = b.module.to(dtype)
    load_weights(module, state, b.graph)
    return b, module.eval()


def same_outputs(
    want: torch.nn.Module, got: torch.nn.Module, shape: tuple[int, ...], dtype: torch.dtype, batch: int = 2
) -> None:
    """Equal eval-mode outputs on one random NCHW batch (without autograd)."""
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with torch.no_grad():
        a, b = want.eval()(x), got.eval()(x)
    assert a.abs().max() > 1e-3  # not a degenerate comparison
    torch.testing.assert_close(b, a, **TOL[dtype])


def ops(graph: Graph) -> dict[str, str]:
    return {n.name: n.op for n in graph.nodes()}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- small specs ------------------------------------------------------------------------

CONV_BN = """
net conv_bn(input_size=3x8x8, bias=false, eps=1e-5) {
  input input_size
  c: conv(3x3, 6, bias=bias)
  b: bn(eps=eps)
  r: relu
  head: conv(1x1, 4)
}
"""

# the stem conv feeds both its BN and (through the block's `add`) the add
SHARED = """
block bn_add() {
  b: bn
  add
}
net shared(input_size=3x8x8) {
  input input_size
  stem: conv(3x3, 4)
  blk: bn_add
  relu
}
"""

BATCH_STATS_BN = """
net batch_stats(input_size=3x8x8) {
  input input_size
  c: conv(3x3, 4)
  b: bn(track_running_stats=false)
  relu
}
"""


# --- the rewrite -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_bn_folds_into_a_fused_conv(dtype: torch.dtype) -> None:
    before, want, state = unoptimised(CONV_BN, dtype=dtype)
    after, got = optimised(CONV_BN, state, passes=["fold_bn"], dtype=dtype)
    g = after.graph
    assert "b" not in g and ops(g)["c"] == "fused_conv"
    a = g.node("c").attrs
    assert a["folded_bn"] == "b" and a["bias"] and not a["conv_bias"] and a["act"] == "none"
    assert g.node("r").inputs == ("c",)
    assert after.passes.records[0].changes == 1
    assert ops(before.graph)["head"] == ops(g)["head"] == "conv"  # no BN after it: untouched
    assert set(got.state_dict()) == set(state) - {f"b.{k}" for k in want.get_submodule("b").state_dict()} | {"c.bias"}
    same_outputs(want, got, (3, 8, 8), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_with_bias_and_bn_eps_fold_exactly(dtype: torch.dtype) -> None:
    overrides = {"bias": "true", "eps": "0.001"}
    _, want, state = unoptimised(CONV_BN, overrides, dtype=dtype)
    assert state["c.bias"].abs().min() > 0  # a real bias takes part in the fold
    after, got = optimised(CONV_BN, state, passes=["fold_bn"], overrides=overrides, dtype=dtype)
    a = after.graph.node("c").attrs
    assert a["conv_bias"] and a["bias"] and a["bn_eps"] == 0.001
    same_outputs(want, got, (3, 8, 8), dtype)


def test_no_fold_when_the_conv_output_has_another_user() -> None:
    before, want, state = unoptimised(SHARED)
    assert sorted(before.graph.users("stem")) == ["blk.add", "blk.b"]
    after, got = optimised(SHARED, state, passes=["fold_bn"])
    assert after.passes.records[0].changes == 0
    assert after.graph.dump_text() == before.graph.dump_text()
    same_outputs(want, got, (3, 8, 8), torch.float64)
    # the whole eval pipeline leaves both in place too (the add reads the raw conv output)
    after, got = optimised(SHARED, state)
    assert ops(after.graph)["stem"] == "conv" and ops(after.graph)["blk.b"] == "bn"
    same_outputs(want, got, (3, 8, 8), torch.float64)


def test_no_fold_of_a_bn_without_running_stats() -> None:
    before, want, state = unoptimised(BATCH_STATS_BN)
    after, got = optimised(BATCH_STATS_BN, state, passes=["fold_bn"])
    assert after.passes.records[0].changes == 0
    assert ops(after.graph) == ops(before.graph)
    assert ops(after.graph)["c"] == "conv" and ops(after.graph)["b"] == "bn"
    same_outputs(want, got, (3, 8, 8), torch.float64, batch=3)  # batch statistics, in eval mode too


# --- whole nets --------------------------------------------------------------------------


def folded_param_delta(graph: Graph) -> int:
    """Parameters the folds removed: -2 C per BN (gamma, beta), + C per conv that gains a bias."""
    delta = 0
    for n in graph.nodes():
        if n.op == "fused_conv" and n.attrs["folded_bn"] is not None:
            c = n.attrs["out"]
            delta += -2 * c + (0 if n.attrs["conv_bias"] else c)
    return delta


def test_parameter_count_after_folding() -> None:
    train = build(SPECS / "resnet18.arch", passes=[], lower=False).graph
    bn_channels = [n.shape[0] for n in train.nodes() if n.op == "bn"]
    assert len(bn_channels) == 20  # 17 convs of the body + 3 projections, each with a BN
    b = build(SPECS / "resnet18.arch", mode="eval", overrides={"input_size": "3x64x64"})
    folded = [n for n in b.graph.nodes() if n.op == "fused_conv" and n.attrs["folded_bn"]]
    assert len(folded) == 20 and not [n for n in b.graph.nodes() if n.op == "bn"]
    # every conv is bias-free, so each fold trades gamma and beta (2 C) for a conv bias (C)
    assert folded_param_delta(b.graph) == -sum(bn_channels)
    assert b.graph.params() == train.params() - sum(bn_channels) == 11_689_512 - 4_800
    assert n_params(b.module) == b.graph.params()

    # with conv biases: only gamma and beta go
    spec_b = build(CONV_BN, overrides={"bias": "true"}, passes=[], lower=False).graph
    eval_b = build(CONV_BN, overrides={"bias": "true"}, mode="eval", lower=False).graph
    assert eval_b.params() == spec_b.params() + folded_param_delta(eval_b) == spec_b.params() - 2 * 6


def test_eval_resnet18_equals_the_reference() -> None:
    """archc.compile(mode="eval") of specs/resnet18.arch against tests/reference_resnet.py."""
    overrides = {"input_size": "3x64x64"}
    reference = ref.resnet(18).double()
    state = random_state(reference, seed=3)
    reference.load_state_dict(state)
    after, got = optimised(SPECS / "resnet18.arch", state, overrides=overrides)
    assert [r.name for r in after.passes.records] == PIPELINES["eval"]
    assert n_params(got) == n_params(reference) + folded_param_delta(after.graph)
    same_outputs(reference, got, (3, 64, 64), torch.float64)

    # the public API, in float32 (the oneDNN path of the fused convs)
    reference = reference.float()
    model = archc.compile(SPECS / "resnet18.arch", mode="eval", overrides=overrides, weights=reference.state_dict())
    assert not model.training
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, out = reference.eval()(x), model(x)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_cli_build_mode_eval_runs_the_eval_pipeline() -> None:
    runner = CliRunner()
    spec = str(SPECS / "resnet18.arch")
    r = runner.invoke(main, ["build", spec, "--mode", "eval", "--json", "--dump-after", "fold_bn"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["mode"] == "eval"
    eval_graph = build(SPECS / "resnet18.arch", mode="eval", lower=False).graph
    train_graph = build(SPECS / "resnet18.arch", passes=[], lower=False).graph
    assert s["params"] == eval_graph.params() == train_graph.params() + folded_param_delta(eval_graph)
    assert "%layer1.0.conv1 = fused_conv(" in r.stderr and "= bn(" not in r.stderr
    r = runner.invoke(main, ["build", spec, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["params"] == train_graph.params() == 11_689_512
