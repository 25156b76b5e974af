"""`archc.errors.closest`: the one did-you-mean helper, for spec names, layers, passes, backends and the catalogue."""

from __future__ import annotations

import pytest

from archc.api import build
from archc.errors import UnknownNameError, closest, did_you_mean
from archc.frontend import catalog
from archc.ir import surface_ops

NAMES = [*surface_ops(), "input", "max", "min", "width", "stride", "momentum", "torch", "dce"]


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("rellu", "relu"),
        ("cnv", "conv"),
        ("mx", "max"),
        ("widht", "width"),  # two neighbours swapped: one edit
        ("torhc", "torch"),
        ("momentun", "momentum"),
        ("strid", "stride"),
        ("Relu", "relu"),  # case is no edit
        ("maxpol", "maxpool"),
    ],
)
def test_close_names_are_suggested(typed: str, meant: str) -> None:
    assert closest(typed, NAMES) == meant
    assert did_you_mean(typed, NAMES) == f"did you mean '{meant}'?"


@pytest.mark.parametrize("typed", ["einsum", "x", "bm", "qqqqqq", "convolution", "attention", "transformer"])
def test_far_names_get_no_suggestion(typed: str) -> None:
    assert closest(typed, NAMES) is None
    assert did_you_mean(typed, NAMES) is None


def test_ties_are_broken_the_same_way_every_time() -> None:
    # resnet18, resnet34 and resnet50 are each two edits from "resnet"
    assert closest("resnet", ["resnet50", "resnet34", "resnet18"]) == "resnet18"
    assert closest("resnet", ["resnet18", "resnet34", "resnet50"]) == "resnet18"
    assert closest("resnet5", ["resnet18", "resnet50"]) == "resnet50"


def test_einsum_in_a_spec_is_not_taken_for_a_layer() -> None:
    text = "net n {\n  input 3x32x32\n  einsum\n}\n"
    with pytest.raises(UnknownNameError) as e:
        build(text, lower=False)
    assert "did you mean" not in e.value.hint
    assert "conv" in e.value.hint and "maxpool" in e.value.hint  # the list of layers instead


def test_the_catalogue_uses_the_same_helper() -> None:
    assert catalog.suggest("resnt101") == closest("resnt101", catalog.entries()) == "resnet101"
    assert catalog.suggest("concat") is None
