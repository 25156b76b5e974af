"""upsample and the adaptive pools: shape rules, attribute checks, located errors; avgpool's count_include_pad."""

from __future__ import annotations

import pytest

from archc.errors import ArgumentError, ShapeError
from archc.ir import OPS, OpProblem
from tests.frontend.test_errors import assert_at, fail
from tests.ir.test_ops_norm import costs


def test_upsample_by_scale_or_to_size() -> None:
    assert costs("upsample", {"scale": 2}, (8, 5, 6)) == ((8, 10, 12), 0, 0)
    assert costs("upsample", {"scale": (2, 3)}, (8, 5, 6)) == ((8, 10, 18), 0, 0)
    assert costs("upsample", {"size": 7, "mode": "bilinear"}, (8, 5, 6)) == ((8, 7, 7), 0, 0)
    assert OPS["upsample"].check_attrs({"scale": 2})["mode"] == "nearest"
    with pytest.raises(OpProblem, match="exactly one of 'scale' and 'size'"):
        costs("upsample", {}, (8, 5, 6))
    with pytest.raises(OpProblem, match="exactly one of 'scale' and 'size'"):
        costs("upsample", {"scale": 2, "size": 3}, (8, 5, 6))
    with pytest.raises(OpProblem, match="bilinear upsampling only"):
        costs("upsample", {"scale": 2, "align_corners": True}, (8, 5, 6))
    with pytest.raises(OpProblem, match="must be one of nearest, bilinear"):
        OPS["upsample"].check_attrs({"scale": 2, "mode": "bicubic"})
    with pytest.raises(OpProblem, match="would make"):
        costs("upsample", {"scale": 1 << 22}, (8, 5, 6))
    with pytest.raises(OpProblem, match="CxHxW"):
        costs("upsample", {"scale": 2}, (8,))


@pytest.mark.parametrize("op", ["adaptive_avgpool", "adaptive_maxpool"])
def test_adaptive_pools(op: str) -> None:
    assert costs(op, {"size": 7}, (512, 13, 13)) == ((512, 7, 7), 0, 0)
    assert costs(op, {"size": (1, 2)}, (4, 3, 3)) == ((4, 1, 2), 0, 0)
    assert costs(op, {"size": 7}, (4, 1, 1)) == ((4, 7, 7), 0, 0)  # as torch: cells may overlap
    with pytest.raises(OpProblem, match="needs 'size'") as e:
        OPS[op].check_attrs({})
    assert f"{op}(7x7)" in e.value.hint
    with pytest.raises(OpProblem, match=">= 1"):
        OPS[op].check_attrs({"size": 0})


def test_avgpool_count_include_pad() -> None:
    assert OPS["avgpool"].check_attrs({})["count_include_pad"] is True  # torch's default
    assert OPS["avgpool"].check_attrs({"count_include_pad": False})["count_include_pad"] is False
    with pytest.raises(OpProblem, match="true or false"):
        OPS["avgpool"].check_attrs({"count_include_pad": 0})


def test_located_errors() -> None:
    text = "net n {\n  input 3x8x8\n  upsample(scale=2, size=4)\n}\n"
    assert "exactly one" in fail(text, ShapeError).message
    text = "net n {\n  input 3x8x8\n  upsample(scale=2, align_corners=true)\n}\n"
    err = fail(text, ShapeError)
    assert "bilinear" in err.message
    assert_at(err, text, 3, "upsample")
    text = "net n {\n  input 3x8x8\n  upsample(scale=2, mode=linear)\n}\n"
    err = fail(text)
    assert "linear" in err.message
    text = "net n {\n  input 3x8x8\n  adaptive_avgpool(size=0)\n}\n"
    assert_at(fail(text, ArgumentError), text, 3, "size")
    text = "net n {\n  input 3x8x8\n  flatten\n  adaptive_maxpool(2)\n}\n"
    assert "CxHxW" in fail(text, ShapeError).message
