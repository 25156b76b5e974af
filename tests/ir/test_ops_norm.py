"""Norms and scales: shape rules, parameters, attribute checks and located errors."""

from __future__ import annotations

import pytest

from archc.api import build
from archc.errors import ArgumentError, ShapeError
from archc.ir import OPS, OpProblem, infer_node
from tests.frontend.test_errors import assert_at, fail


def costs(op: str, given: dict, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int, int]:
    """(output shape, parameters, multiply-adds) of one application."""
    attrs = OPS[op].check_attrs(given)
    resolved, out = infer_node(op, attrs, [shape])
    return out, OPS[op].params(resolved, [shape], out), OPS[op].macs(resolved, [shape], out)


def test_layer_norm_on_maps_and_vectors() -> None:
    assert costs("layer_norm", {}, (96, 14, 14)) == ((96, 14, 14), 192, 0)
    assert costs("layer_norm", {"eps": 1e-5}, (768,)) == ((768,), 1536, 0)
    assert OPS["layer_norm"].check_attrs({})["eps"] == 1e-6  # ConvNeXt's
    with pytest.raises(OpProblem, match="CxHxW map or a vector"):
        costs("layer_norm", {}, (4, 4))


def test_group_norm_groups_divide_channels() -> None:
    assert costs("group_norm", {"groups": 32}, (64, 8, 8)) == ((64, 8, 8), 128, 0)
    with pytest.raises(OpProblem, match=r"groups=3 must divide the input channels \(64\)") as e:
        costs("group_norm", {"groups": 3}, (64, 8, 8))
    assert e.value.attr == "groups"
    with pytest.raises(OpProblem, match="needs 'groups'"):
        OPS["group_norm"].check_attrs({})
    with pytest.raises(OpProblem, match="CxHxW"):
        costs("group_norm", {"groups": 2}, (64,))


def test_layer_scale_is_one_parameter_per_channel() -> None:
    assert costs("layer_scale", {"init": 1e-6}, (96, 7, 7)) == ((96, 7, 7), 96, 0)
    assert costs("layer_scale", {}, (10,)) == ((10,), 10, 0)
    assert OPS["layer_scale"].check_attrs({"init": 1})["init"] == 1.0
    with pytest.raises(OpProblem, match="'init' must be a number"):
        OPS["layer_scale"].check_attrs({"init": True})


def test_build_reports_params_and_no_macs() -> None:
    text = "net n {\n  input 8x4x4\n  group_norm(4)\n  layer_norm\n  layer_scale(0.5)\n}\n"
    g = build(text, lower=False).graph
    assert g.params() == 16 + 16 + 8 and g.macs() == 0


def test_located_errors() -> None:
    text = "net n {\n  input 6x4x4\n  group_norm(groups=4)\n}\n"
    err = fail(text, ShapeError)  # a shape error points at the call
    assert "groups=4 must divide the input channels (6)" in err.message
    assert_at(err, text, 3, "group_norm")
    text = "net n {\n  input 6x4x4\n  layer_norm(eps=2)\n}\n"
    err = fail(text, ArgumentError)
    assert "'eps' must be in [0.0, 1.0]" in err.message
    assert_at(err, text, 3, "eps")
    text = "net n {\n  input 6x4x4\n  flatten\n  group_norm(2)\n}\n"
    assert "CxHxW" in fail(text, ShapeError).message
    text = "net n {\n  input 6x4x4\n  layer_scale(init=true)\n}\n"
    assert_at(fail(text, ArgumentError), text, 3, "init")
