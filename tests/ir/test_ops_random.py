"""dropout and drop_path: shape rules, the probability check and located errors."""

from __future__ import annotations

import pytest

from archc.errors import ArgumentError
from archc.ir import OPS, OpProblem
from archc.ir.registry import ALIASING
from tests.frontend.test_errors import assert_at, fail
from tests.ir.test_ops_norm import costs


@pytest.mark.parametrize("op", ["dropout", "drop_path"])
def test_same_shape_no_params_no_macs(op: str) -> None:
    assert costs(op, {"p": 0.1}, (8, 4, 4)) == ((8, 4, 4), 0, 0)
    assert costs(op, {"p": 0}, (10,)) == ((10,), 0, 0)
    assert OPS[op].result == ALIASING  # the identity in eval returns its input


@pytest.mark.parametrize("op", ["dropout", "drop_path"])
def test_probability_in_zero_one(op: str) -> None:
    assert OPS[op].check_attrs({"p": 0})["p"] == 0.0
    assert OPS[op].check_attrs({"p": 0.999})["p"] == 0.999
    for bad in (1, 1.5, -0.1):
        with pytest.raises(OpProblem, match=r"'p' must be in \[0, 1\)"):
            OPS[op].check_attrs({"p": bad})
    with pytest.raises(OpProblem, match="'p' must be a number"):
        OPS[op].check_attrs({"p": True})


def test_defaults() -> None:
    assert OPS["dropout"].check_attrs({})["p"] == 0.5  # nn.Dropout's
    with pytest.raises(OpProblem, match="needs 'p'") as e:
        OPS["drop_path"].check_attrs({})
    assert "drop_path(0.1)" in e.value.hint


def test_located_errors() -> None:
    text = "net n {\n  input 3x8x8\n  drop_path(1.0)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "'p' must be in [0, 1), got 1.0"
    assert_at(err, text, 3, "1.0")
    text = "net n {\n  input 3x8x8\n  dropout(p=-1)\n}\n"
    assert_at(fail(text, ArgumentError), text, 3, "p", nth=1)
    text = "net n {\n  input 3x8x8\n  drop_path\n}\n"
    assert "needs 'p'" in fail(text, ArgumentError).message
