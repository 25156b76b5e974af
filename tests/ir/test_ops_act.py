"""The activation ops and their table: shapes, costs, traits, labels, attribute checks, located errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import archc
from archc.cli import main
from archc.errors import ArchcError, ArgumentError
from archc.ir import OPS, OpProblem, infer_node
from archc.ir.activations import ACTIVATIONS, activation_expr, activation_module, torch_kwargs
from archc.viz import node_label

NEW = ("relu6", "sigmoid", "hardsigmoid", "silu", "hardswish", "gelu", "tanh", "leaky_relu")


def _spec(*layers: str, shape: str = "3x8x8") -> str:
    body = "".join(f"  {layer}\n" for layer in layers)
    return f"net acts() {{\n  input {shape}\n{body}}}\n"


@pytest.mark.parametrize("op", NEW)
@pytest.mark.parametrize("shape", [(3, 5, 7), (10,)])
def test_shape_unchanged_no_params_no_macs(op: str, shape: tuple[int, ...]) -> None:
    spec = OPS[op]
    attrs = spec.check_attrs({})
    resolved, out = infer_node(op, attrs, [shape])
    assert out == shape and resolved == attrs
    assert spec.params(attrs, [shape], out) == 0 and spec.macs(attrs, [shape], out) == 0
    assert spec.elementwise and spec.family == "act" and spec.surface and spec.arity == 1
    assert not spec.weighted


def test_the_table_describes_every_activation_op_and_relu() -> None:
    acts = {name for name, s in OPS.items() if s.family == "act" and s.surface}
    assert acts == set(ACTIVATIONS) == {"relu", *NEW}
    for name, entry in ACTIVATIONS.items():
        assert entry.name == name
        assert entry.template.startswith(entry.function + "(")
        # every attribute handed to torch is an attribute of the op
        assert {attr for attr, _, _ in entry.kwargs} <= set(OPS[name].attrs)
    assert ACTIVATIONS["gelu"].inplace is None  # torch has no in-place gelu


def test_expression_and_module_text() -> None:
    assert activation_expr("hardswish", "y", {}) == "F.hardswish(y)"
    assert activation_expr("relu", "y", {}) == "torch.relu(y)"
    assert activation_expr("relu", "y", {}, inplace=True) == "torch.relu_(y)"
    assert activation_expr("gelu", "y", {}, inplace=True) == "F.gelu(y)"  # no in-place form: the functional one
    # torch's defaults are not written; other values are, under torch's keyword
    assert activation_expr("leaky_relu", "y", {"slope": 0.01}) == "F.leaky_relu(y)"
    assert activation_expr("leaky_relu", "y", {"slope": 0.2}) == "F.leaky_relu(y, negative_slope=0.2)"
    assert activation_expr("leaky_relu", "y", {"slope": 0.2}, inplace=True) == "F.leaky_relu_(y, negative_slope=0.2)"
    assert activation_expr("gelu", "y", {"approximate": "tanh"}) == "F.gelu(y, approximate='tanh')"
    assert activation_module("gelu", {"approximate": "none"}) == "nn.GELU()"
    assert activation_module("leaky_relu", {"slope": 0.3}) == "nn.LeakyReLU(negative_slope=0.3)"
    assert activation_module("relu6", {}) == "nn.ReLU6()"
    assert torch_kwargs("leaky_relu", {}) == {}


def test_the_table_writes_only_checked_values() -> None:
    with pytest.raises(OpProblem, match="one of none, tanh"):
        activation_expr("gelu", "y", {"approximate": "tanh'); import os; ('"})
    with pytest.raises(OpProblem, match=r"in \[0.0, 1.0\]"):
        activation_module("leaky_relu", {"slope": float("nan")})
    with pytest.raises(KeyError, match="not an activation"):
        activation_expr("conv", "y", {})


def test_attribute_checks() -> None:
    assert OPS["leaky_relu"].check_attrs({})["slope"] == 0.01
    assert OPS["leaky_relu"].check_attrs({"slope": 0})["slope"] == 0.0
    assert OPS["leaky_relu"].check_attrs({"slope": 1})["slope"] == 1.0
    for bad, what in ((-0.1, "in"), (1.5, "in"), (float("inf"), "in"), (float("nan"), "in"), (True, "number")):
        with pytest.raises(OpProblem, match=what) as e:
            OPS["leaky_relu"].check_attrs({"slope": bad})
        assert e.value.attr == "slope" and "[0, 1]" in e.value.hint
    assert OPS["gelu"].check_attrs({})["approximate"] == "none"
    with pytest.raises(OpProblem, match="one of none, tanh"):
        OPS["gelu"].check_attrs({"approximate": "erf"})
    with pytest.raises(OpProblem, match="no parameter 'slope'"):
        OPS["silu"].check_attrs({"slope": 0.1})


def _error(text: str) -> ArchcError:
    with pytest.raises(ArchcError) as info:
        archc.build(text, lower=False)
    return info.value


@pytest.mark.parametrize(
    ("call", "token", "message"),
    [
        ("leaky_relu(-1)", "-1", r"'slope' must be in \[0.0, 1.0\], got -1"),
        ("leaky_relu(2)", "2", r"'slope' must be in \[0.0, 1.0\], got 2"),
        ("leaky_relu(slope=true)", "slope", "'slope' must be a number, got true"),
        ("leaky_relu(3x3)", "3x3", "'slope' must be a number, got 3x3"),
        ("leaky_relu(1e400)", "1e400", r"'slope' must be in \[0.0, 1.0\], got inf"),
        ("gelu(approximate=3)", "approximate", "'approximate' must be one of none, tanh, got 3"),
        ("relu6(3)", "3", "too many positional arguments for 'relu6'"),
    ],
)
def test_misuse_is_a_located_argument_error(call: str, token: str, message: str) -> None:
    text = _spec("conv(3x3, 4)", call)
    err = _error(text)
    assert isinstance(err, ArgumentError), err.render()
    assert re.match(message, err.message), err.render()
    line = text.splitlines()[3]
    assert (err.loc.line, err.loc.col) == (4, line.index(token) + 1)
    assert err.loc.width == len(token)
    shown = err.render()
    assert f"<spec>:4:{line.index(token) + 1}: error:" in shown and line in shown and "^" * len(token) in shown


def test_gelu_tanh_is_a_symbol_and_tanh_still_a_layer() -> None:
    b = archc.build(_spec("gelu(approximate=tanh)", "tanh", "gelu(approximate=none)"), lower=False)
    ops = [(n.op, dict(n.attrs)) for n in b.graph.nodes()][1:]
    assert ops == [("gelu", {"approximate": "tanh"}), ("tanh", {}), ("gelu", {"approximate": "none"})]


def test_labels() -> None:
    text = _spec(
        "relu6", "sigmoid", "hardsigmoid", "silu", "hardswish", "gelu", "gelu(approximate=tanh)", "tanh",
        "leaky_relu", "leaky_relu(0.2)",
    )  # fmt: skip
    labels = [node_label(n) for n in archc.build(text, lower=False).graph.nodes()][1:]
    assert labels == [
        "relu6", "sigmoid", "hardsigmoid", "silu", "hardswish", "gelu", "gelu, tanh", "tanh",
        "leaky_relu, 0.01", "leaky_relu, 0.2",
    ]  # fmt: skip


def test_build_json_counts_no_parameters_or_macs_for_activations(tmp_path: Path) -> None:
    acts = ["relu6", "sigmoid", "hardsigmoid", "silu", "hardswish", "gelu", "tanh", "leaky_relu(0.1)"]
    with_acts = tmp_path / "acts.arch"
    with_acts.write_text(_spec("conv(3x3, 4)", *acts, "avgpool", "flatten", "fc: linear(5)"))
    without = tmp_path / "plain.arch"
    without.write_text(_spec("conv(3x3, 4)", "avgpool", "flatten", "fc: linear(5)"))
    reports = []
    for path in (with_acts, without):
        r = CliRunner().invoke(main, ["build", str(path), "--json"])
        assert r.exit_code == 0, r.stderr
        reports.append(json.loads(r.stdout))
    assert reports[0]["params"] == reports[1]["params"] == 4 * 3 * 9 + 4 * 5 + 5
    assert reports[0]["macs"] == reports[1]["macs"]
    assert reports[0]["output_shape"] == [5]


def test_cli_prints_a_bad_slope_with_its_place_and_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "bad.arch"
    spec.write_text(_spec("leaky_relu(-1)"))
    r = CliRunner().invoke(main, ["build", str(spec)])
    assert r.exit_code == 2
    assert f"{spec}:3:14: error: 'slope' must be in [0.0, 1.0], got -1" in r.stderr
    assert "Traceback" not in r.stderr and "hint: give a slope in [0, 1]" in r.stderr
