"""Named values (`-> x`, `from x`), computed labels, `repeat ... named`, groups and outputs anywhere."""

from __future__ import annotations

import warnings

import pytest
import torch

import archc
from archc.errors import ArchcWarning, ArgumentError, SpecSyntaxError, UnknownNameError
from archc.frontend import elaborate, load
from archc.ir import Interpreter
from tests.frontend.test_errors import assert_at, fail


def graph(text: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchcWarning)
        return elaborate(load(text))


def test_bind_and_from_give_a_value_several_readers() -> None:
    text = """
net n {
  input 3x8x8
  stem: conv(3x3, 4)
  -> x
  a: conv(3x3, 4)
  add { from x }
  b: conv(1x1, 4)
  mul { from x }
  concat { from x } { from x }
}
"""
    g = graph(text)
    assert g.node("add").inputs == ("a", "stem")
    assert g.node("mul").inputs == ("b", "stem")
    assert g.node("concat").inputs == ("mul", "stem", "stem")
    assert g.node("concat").shape == (12, 8, 8)
    assert sorted(g.users("stem")) == ["a", "add", "concat", "mul"]


def test_from_before_the_name_is_bound() -> None:
    text = "net n {\n  input 3x8x8\n  from x\n  relu\n  -> x\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "no value named 'x' here"
    assert_at(err, text, 3, "x")
    assert "-> name" in err.hint


def test_from_an_unknown_name_suggests_a_close_one() -> None:
    text = "net n {\n  input 3x8x8\n  relu\n  -> lateral\n  from laterl\n}\n"
    err = fail(text, UnknownNameError)
    assert "lateral" in err.hint
    assert_at(err, text, 5, "laterl")


def test_a_name_bound_twice_in_one_scope() -> None:
    text = "net n {\n  input 3x8x8\n  relu\n  -> x\n  from x\n  relu\n  -> x\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "the value 'x' is named twice"
    assert_at(err, text, 7, "x")
    assert any(":4:" in note for note in err.notes)


def test_an_unread_name_warns_with_its_place() -> None:
    text = "net n {\n  input 3x8x8\n  relu\n  -> spare\n  relu\n}\n"
    with pytest.warns(ArchcWarning) as rec:
        elaborate(load(text))
    (w,) = rec
    assert "'spare' is named but never read" in str(w.message)
    assert w.message.loc.line == 4


def test_hiding_an_outer_name_warns() -> None:
    text = """
net n {
  input 3x8x8
  relu
  -> x
  repeat 2 {
    relu
    -> x
    from x
  }
  from x
}
"""
    with pytest.warns(ArchcWarning, match="'x' hides the value of the same name"):
        elaborate(load(text))


def test_a_block_sees_only_its_own_names() -> None:
    text = "block b() {\n  from x\n}\nnet n {\n  input 3x8x8\n  relu\n  -> x\n  b\n  from x\n}\n"
    err = fail(text, UnknownNameError)
    assert_at(err, text, 2, "x")
    assert any("in block 'b'" in note for note in err.notes)


def test_names_bound_in_a_repeat_iteration_stay_in_it() -> None:
    text = "net n {\n  input 3x8x8\n  repeat 2 {\n    relu\n    -> y\n    from y\n  }\n  from y\n}\n"
    err = fail(text, UnknownNameError)
    assert_at(err, text, 8, "y")


def test_a_keyword_cannot_name_a_value() -> None:
    text = "net n {\n  input 3x8x8\n  relu\n  -> repeat\n}\n"
    err = fail(text, UnknownNameError)
    assert_at(err, text, 4, "repeat")


# --- computed labels, repeat ... named, groups ---------------------------------------------------
def test_computed_labels_name_modules_like_torchvision() -> None:
    text = """
block dense_layer(growth) {
  norm1: bn
  relu1: relu
  conv1: conv(1x1, 4 * growth)
}
net n {
  input 4x8x8
  features: {
    "0": conv(3x3, 8)
    denseblock1: repeat 3 as i named "denselayer{i + 1}" {
      concat { dense_layer(4) }
    }
    "transition{1}": conv(1x1, 8)
  }
}
"""
    g = graph(text)
    names = [n.name for n in g.nodes()]
    assert "features.0" in names
    assert "features.denseblock1.denselayer1.conv1" in names
    assert "features.denseblock1.denselayer3.norm1" in names
    assert "features.transition1" in names
    assert g.node("features.denseblock1.denselayer3.concat").shape == (8 + 3 * 16, 8, 8)


def test_a_computed_label_must_be_a_module_name() -> None:
    text = 'net n(p=2) {\n  input 3x8x8\n  "a{p * 1.5}": relu\n}\n'
    err = fail(text, ArgumentError)
    assert "integers and names" in err.message
    assert_at(err, text, 3, "p * 1.5")


def test_a_computed_label_with_a_syntax_error_points_into_the_string() -> None:
    text = 'net n {\n  input 3x8x8\n  "a{1 +}": relu\n}\n'
    err = fail(text, SpecSyntaxError)
    assert err.loc is not None and err.loc.line == 3 and err.loc.col > 5


def test_computed_labels_that_collide_are_located() -> None:
    text = 'net n {\n  input 3x8x8\n  "layer{0 + 1}": relu\n  layer1: relu\n}\n'
    err = fail(text, UnknownNameError)
    assert "duplicate layer name 'layer1'" in err.message
    assert_at(err, text, 4, "layer1")


# --- outputs anywhere --------------------------------------------------------------------------
def test_outputs_inside_blocks_and_repeats_have_hierarchical_names() -> None:
    text = """
block stage(width) {
  conv(3x3, width, /2)
  output out
}
net n {
  input 3x32x32
  layer1: stage(4)
  features: repeat 2 as i named "s{i + 2}" {
    conv(3x3, 8)
    output "p{i + 2}"
  }
}
"""
    g = graph(text)
    assert g.output_names == ["layer1.out", "features.s2.p2", "features.s3.p3"]
    model = archc.compile(text, mode="eval")
    out = model(torch.randn(1, 3, 32, 32))
    assert list(out) == g.output_names and out["features.s3.p3"].shape == (1, 8, 16, 16)


def test_an_unlabelled_block_called_twice_names_its_output_twice() -> None:
    text = "block b() {\n  relu\n  output out\n}\nnet n {\n  input 3x8x8\n  b\n  b\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "output 'out' is named twice"
    assert_at(err, text, 3, "out", nth=1)


# --- the compiled module agrees with the interpreter -------------------------------------------
SE_DENSE = """
block se(channels, reduction=4) {
  mul {
    avgpool
    fc1: conv(1x1, channels // reduction, bias=true)
    relu
    fc2: conv(1x1, channels, bias=true)
    sigmoid
  }
}
net n {
  input 3x16x16
  conv1: conv(3x3, 8)
  bn1: bn
  relu
  -> stem
  se: se(8)
  concat { from stem } { from stem; chunk(2, 1) }
  split(5, 2)
  conv2: conv(3x3, 8)
  channel_shuffle(2)
  avgpool
  flatten
  fc: linear(10)
}
"""


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_compiled_tensor_ops_match_the_interpreter(mode: str) -> None:
    from archc.bench.reference import randomise

    torch.manual_seed(0)
    built = archc.api.build(SE_DENSE, mode=mode)
    model = built.module.double()
    randomise(model)
    model.eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    want = Interpreter(built.graph, model.state_dict()).run(x)
    torch.testing.assert_close(model(x), want, rtol=1e-10, atol=1e-10)
    assert built.graph.node("concat").shape == (8 + 8 + 4, 16, 16)
    assert built.graph.node("split").shape == (5, 16, 16)


def test_the_cli_prints_a_warning_with_its_place_and_goes_on(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from archc.cli import main

    spec = tmp_path / "w.arch"
    spec.write_text("net n {\n  input 3x8x8\n  relu\n  -> spare\n}\n")
    r = CliRunner().invoke(main, ["build", str(spec), "--json"])
    assert r.exit_code == 0
    assert json.loads(r.stdout)["params"] == 0
    assert "w.arch:4:6: warning: the value 'spare' is named but never read" in r.stderr
    assert "^^^^^" in r.stderr and "Traceback" not in r.stderr
