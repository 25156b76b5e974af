"""dropout and drop_path in the torch backend: identity in eval, torch's semantics in train, seeds, ONNX."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from tests.backends.lower_check import TOL, interpreter_error, json_params, labels, onnx_error

RANDOM = """
net rnd {
  input 4x3x3
  conv(1x1, 4)
  sd: drop_path(0.25)
  drop_path(0.5)
  d: dropout(0.1)
  flatten
  dropout
  linear(2)
}
"""


def one_op(op: str, shape: str = "6x4x4") -> str:
    return f"net n {{\n  input {shape}\n  {op}\n}}\n"


@pytest.mark.parametrize("op", ["dropout(0.3)", "drop_path(0.3)", "d: dropout(0.3)", "d: drop_path(0.3)"])
@pytest.mark.parametrize("shape", ["6x4x4", "10"])
def test_identity_in_eval_and_at_p_zero(op: str, shape: str) -> None:
    x = torch.randn(5, *map(int, shape.split("x")))
    assert archc.compile(one_op(op, shape), mode="eval")(x) is x  # returned as it is, no copy
    zero = archc.compile(one_op(op.replace("0.3", "0"), shape)).train()
    assert torch.equal(zero(x), x)


def test_dropout_is_torch_dropout() -> None:
    m = archc.compile(RANDOM).train()
    assert isinstance(m.d, torch.nn.Dropout) and m.d.p == 0.1
    assert "F.dropout(flatten, 0.5, self.training)" in m.archc_source
    x = torch.randn(64, 10)
    torch.manual_seed(3)
    got = archc.compile(one_op("dropout(0.3)", "10")).train()(x)
    torch.manual_seed(3)
    assert torch.equal(got, F.dropout(x, 0.3, True))


def test_drop_path_drops_whole_samples_and_rescales() -> None:
    p, n = 0.3, 20000
    m = archc.compile(one_op(f"drop_path({p})", "2x3x3")).train()
    y = m(torch.ones(n, 2, 3, 3))
    per_sample = y.flatten(1)
    kept = per_sample[:, 0] != 0
    # every sample is all zero or all 1/(1-p)
    assert torch.equal(per_sample[kept], torch.full_like(per_sample[kept], 1 / (1 - p)))
    assert torch.equal(per_sample[~kept], torch.zeros_like(per_sample[~kept]))
    # kept ~ Binomial(n, 1-p): within 5 standard deviations
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(kept.sum().item() - n * (1 - p)) < 5 * sd
    assert abs(y.mean().item() - 1) < 5 * sd / n / (1 - p)  # the expectation is kept


def test_drop_path_is_reproducible_under_a_seed() -> None:
    m = archc.compile(RANDOM).train()
    x = torch.randn(32, 4, 3, 3)
    torch.manual_seed(7)
    a = m(x)
    torch.manual_seed(7)
    b = m(x)
    torch.manual_seed(8)
    c = m(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_drop_path_matches_the_row_mode_formula() -> None:
    # torchvision's StochasticDepth(p, "row"): a Bernoulli(1-p) per sample from the default generator, / (1-p)
    x = torch.randn(16, 4, 2, 2)
    torch.manual_seed(11)
    got = archc.compile(one_op("drop_path(0.4)", "4x2x2")).train()(x)
    torch.manual_seed(11)
    keep = torch.empty(16, 1, 1, 1).bernoulli_(0.6) / 0.6
    torch.testing.assert_close(got, x * keep)


def test_generated_code_is_standalone_and_labelled_modules_hold_no_state() -> None:
    m = archc.compile(RANDOM)
    src = m.archc_source
    imports = [ln for ln in src.splitlines() if ln.startswith(("import ", "from "))]
    assert imports == ["import torch", "import torch.nn.functional as F", "from torch import nn"]
    assert "class StochasticDepth(nn.Module)" in src and "self.sd = StochasticDepth(0.25)" in src
    assert "StochasticDepth.drop(sd, 0.5, self.training)" in src
    assert type(m.sd).__name__ == "StochasticDepth" and m.sd.p == 0.25
    assert not any(k.startswith(("sd.", "d.")) for k in m.state_dict())


def test_labels_params_and_onnx(tmp_path) -> None:
    got = labels(RANDOM)
    assert got["sd"] == "drop path 0.25" and got["d"] == "dropout 0.1" and got["dropout"] == "dropout 0.5"
    assert json_params(RANDOM, tmp_path) == 16 + 36 * 2 + 2  # conv, linear: nothing random counts
    assert onnx_error(RANDOM) <= TOL


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_ir_interpreter_agrees(mode: str) -> None:
    assert interpreter_error(RANDOM, mode, (4, 3, 3)) < 1e-10
