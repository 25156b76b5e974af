"""Op specs: attribute checking, shape rules, parameter and multiply-add counts."""

from __future__ import annotations

import pytest

from archc.ir import infer_node
from archc.ir.ops import OPS, OpProblem


def infer(op: str, given: dict, shape: tuple[int, ...]) -> tuple[dict, tuple[int, ...]]:
    attrs = OPS[op].check_attrs(given)
    resolved, out = infer_node(op, attrs, [shape])
    assert OPS[op].infer(attrs, [shape]) == out
    assert attrs == OPS[op].check_attrs(given), "infer must not change its attrs argument"
    return resolved, out


def test_conv_same_padding_stride_and_costs() -> None:
    a, out = infer("conv", {"out": 64, "kernel": (7, 7), "stride": 2}, (3, 224, 224))
    assert a["padding"] == (3, 3)
    assert out == (64, 112, 112)
    assert OPS["conv"].params(a, [(3, 224, 224)], out) == 64 * 3 * 49
    assert OPS["conv"].macs(a, [(3, 224, 224)], out) == 64 * 3 * 49 * 112 * 112


def test_conv_dilation_groups_and_bias() -> None:
    a, out = infer("conv", {"out": 32, "kernel": 3, "dilation": 2, "groups": 4, "bias": True}, (16, 10, 10))
    assert a["padding"] == (2, 2) and out == (32, 10, 10)
    assert OPS["conv"].params(a, [(16, 10, 10)], out) == 32 * 4 * 9 + 32
    with pytest.raises(OpProblem, match="groups"):
        infer("conv", {"out": 30, "kernel": 3, "groups": 4}, (16, 10, 10))


def test_conv_that_makes_the_map_vanish() -> None:
    with pytest.raises(OpProblem, match="vanish"):
        infer("conv", {"out": 8, "kernel": 5, "padding": 0}, (3, 3, 3))


def test_attribute_checks() -> None:
    with pytest.raises(OpProblem, match="needs 'out'"):
        OPS["conv"].check_attrs({"kernel": 3})
    with pytest.raises(OpProblem, match="integer"):
        OPS["conv"].check_attrs({"kernel": 3, "out": True})
    with pytest.raises(OpProblem, match="no parameter 'size'"):
        OPS["relu"].check_attrs({"size": 3})
    with pytest.raises(OpProblem, match=">= 1"):
        OPS["conv"].check_attrs({"kernel": 3, "out": 0})
    with pytest.raises(OpProblem, match="two dimensions"):
        OPS["conv"].check_attrs({"kernel": (3, 3, 3), "out": 4})


def test_pools() -> None:
    a, out = infer("maxpool", {"kernel": 3, "stride": 2}, (64, 112, 112))
    assert a["padding"] == (1, 1) and out == (64, 56, 56)
    a, out = infer("avgpool", {}, (2048, 7, 7))
    assert a["kernel"] is None and out == (2048, 1, 1)
    a, out = infer("avgpool", {"kernel": 2}, (8, 9, 9))
    assert a["stride"] == (2, 2) and out == (8, 4, 4)
    with pytest.raises(OpProblem, match="at most half"):
        infer("maxpool", {"kernel": 3, "padding": 2}, (8, 9, 9))


def test_linear_flatten_and_vectors() -> None:
    a, out = infer("linear", {"out": 10}, (64,))
    assert out == (10,) and OPS["linear"].params(a, [(64,)], out) == 650
    assert OPS["linear"].macs(a, [(64,)], out) == 640
    with pytest.raises(OpProblem, match="needs a vector") as e:
        infer("linear", {"out": 10}, (64, 1, 1))
    assert "flatten" in e.value.hint
    _, out = infer("flatten", {}, (64, 2, 2))
    assert out == (256,)
    with pytest.raises(OpProblem, match="CxHxW"):
        infer("bn", {}, (64,))


def test_option_a_ops() -> None:
    _, out = infer("subsample", {"stride": 2}, (16, 33, 32))
    assert out == (16, 17, 16)  # x[:, :, ::2, ::2] keeps ceil(n/2)
    _, out = infer("pad", {"out": 32}, (16, 17, 16))
    assert out == (32, 17, 16)
    with pytest.raises(OpProblem, match="already has"):
        infer("pad", {"out": 8}, (16, 4, 4))


def test_add_mismatch_names_the_fix() -> None:
    with pytest.raises(OpProblem, match="channel mismatch") as e:
        OPS["add"].infer({}, [(256, 56, 56), (64, 56, 56)])
    assert "option B" in e.value.hint and "option A" in e.value.hint
    with pytest.raises(OpProblem, match="spatial mismatch"):
        OPS["add"].infer({}, [(64, 28, 28), (64, 56, 56)])
    assert OPS["add"].infer({}, [(8, 4, 4), (8, 4, 4)]) == (8, 4, 4)
