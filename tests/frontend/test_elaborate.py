"""Elaboration semantics: scopes and names, add, repeat, conditionals, builtins, values."""

from __future__ import annotations

import pytest

from archc.api import build
from archc.errors import ArchcError, UnknownNameError


def graph(spec: str, **overrides: str):
    return build(spec, lower=False, passes=[], overrides=overrides).graph


def names(spec: str) -> list[str]:
    return [n.name for n in graph(spec).nodes()]


def test_unlabelled_calls_are_transparent_and_labelled_calls_nest() -> None:
    spec = """
    block unit(c) { conv(3x3, c) bn relu }
    net n() {
      input 3x8x8
      unit(4)
      stem: unit(4)
    }
    """
    assert names(spec) == ["input", "conv", "bn", "relu", "stem.conv", "stem.bn", "stem.relu"]


def test_auto_names_avoid_labels_written_later() -> None:
    spec = "net n() {\n input 3x8x8\n relu\n relu\n relu_1: identity\n}\n"
    # the second unnamed relu must not take relu_1, which a later statement labels
    assert names(spec) == ["input", "relu", "relu_2", "relu_1"]


def test_repeat_scopes_index_and_label() -> None:
    spec = """
    net n() {
      input 2x8x8
      stage: repeat 3 as i { conv(1x1, 2 + i) }
    }
    """
    g = graph(spec)
    assert [n.name for n in g.nodes()][1:] == ["stage.0.conv", "stage.1.conv", "stage.2.conv"]
    assert [n.shape[0] for n in g.nodes()][1:] == [2, 3, 4]


def test_add_uses_the_scope_input_through_the_branch() -> None:
    spec = """
    block res(c, stride=1) {
      conv(3x3, c, /stride)
      add { proj: conv(1x1, c, /stride) }
    }
    net n() {
      input 4x8x8
      a: res(4)
      b: res(8, stride=2)
      repeat 2 { relu add }
    }
    """
    g = graph(spec)
    assert g.node("a.add").inputs == ("a.conv", "a.proj")
    assert g.node("a.proj").inputs == ("input",)
    assert g.node("b.add").inputs == ("b.conv", "b.proj")
    assert g.node("b.proj").inputs == ("a.add",)
    assert g.node("b.add").shape == (8, 4, 4)
    # an unlabelled repeat: iterations 0, 1 in the net's scope, add reads each iteration's input
    assert g.node("1.add").inputs == ("1.relu", "0.add")


def test_builtins_follow_the_input_shape() -> None:
    spec = """
    block widen() { conv(1x1, 2 * in_channels) }
    net n() { input 3x8x8 widen widen }
    """
    assert [n.shape for n in graph(spec).nodes()][1:] == [(6, 8, 8), (12, 8, 8)]


def test_expressions_conditionals_and_symbols() -> None:
    spec = """
    block pick(kind=B, k=3) {
      if kind == A { conv(1x1, max(2, k // 2)) }
      elif kind == B and not (k < 3) { conv(kernel=k, out=k * 2 - 1 + 10 % 4, padding=0) }
      else { identity }
    }
    net n(kind=B, k=3) { input 3x8x8 pick(kind, k) }
    """
    assert graph(spec).output.shape == (7, 6, 6)
    assert graph(spec, kind="A", k="9").output.shape == (4, 8, 8)
    assert graph(spec, kind="C").output.op == "identity"


def test_conditional_expressions_and_floats() -> None:
    spec = "net n(first=true) {\n input 3x8x8\n bn(eps=1e-3 if first else 1e-5, momentum=0.01)\n}\n"
    bn = graph(spec).output
    assert bn.attrs["eps"] == pytest.approx(1e-3) and bn.attrs["momentum"] == pytest.approx(0.01)


def test_option_a_shortcut_structure() -> None:
    g = build("specs/cifar/resnet20.arch", lower=False, passes=[]).graph
    assert [n.op for n in g.nodes() if n.name.startswith("layer2.0.downsample.")] == ["subsample", "pad"]
    assert not [n for n in g.nodes() if n.name.startswith("layer1.0.downsample.")]  # identity


def test_plain_nets_have_no_adds_and_option_c_projects_every_block() -> None:
    assert not [n for n in build("specs/plain18.arch", lower=False, passes=[]).graph.nodes() if n.op == "add"]
    g = build("specs/resnet18.arch", lower=False, passes=[], overrides={"shortcut": "C"}).graph
    assert len([n for n in g.nodes() if n.name.endswith("downsample.0")]) == 8


def test_use_resolves_relative_to_the_file(tmp_path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "base.arch").write_text("block b(c) { conv(3x3, c) }\n")
    (tmp_path / "lib" / "more.arch").write_text('use "base.arch"\nblock bb(c) { b(c) b(c) }\n')
    (tmp_path / "net.arch").write_text('use "lib/more.arch"\nuse "lib/base.arch"\nnet n() { input 3x8x8 x: bb(5) }\n')
    g = build(tmp_path / "net.arch", lower=False, passes=[]).graph
    assert [n.name for n in g.nodes()] == ["input", "x.conv", "x.conv_1"]
    assert g.node("x.conv").loc == "lib/base.arch:1:14"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("block b(in_channels) { relu }\nnet n() { input 3x8x8 }", "'in_channels' is reserved"),
        ("net n(c=1, c=2) { input 3x8x8 }", "declared twice"),
        ("net n() { input 3x8x8 repeat 2 as in_width { relu } }", "built-in variable"),
    ],
)
def test_reserved_and_repeated_parameter_names(spec: str, message: str) -> None:
    with pytest.raises(UnknownNameError, match=message):
        build(spec, lower=False)


def test_net_parameters_need_defaults() -> None:
    with pytest.raises(ArchcError, match="has no default") as e:
        build("net n(width) { input 3x8x8 }", lower=False)
    assert (e.value.loc.line, e.value.loc.col) == (1, 7)


def test_keywords_match_the_grammar() -> None:
    import re
    from pathlib import Path

    from archc.frontend.parser import KEYWORDS

    grammar = (Path(__file__).resolve().parents[2] / "archc/frontend/grammar.lark").read_text()
    assert set(re.findall(r'"([a-z_]+)"', grammar)) == KEYWORDS


@pytest.mark.parametrize(
    "spec, message",
    [
        ("block repeat() { relu }\nnet n() { input 3x8x8 }", "keyword and cannot name a block"),
        ("block b(as=1) { relu }\nnet n() { input 3x8x8 }", "keyword and cannot name a parameter"),
        ("block b(a=1, c=a) { relu }\nnet n() { input 3x8x8 }", "names the parameter 'a'"),
    ],
)
def test_unreachable_names_are_refused(spec: str, message: str) -> None:
    with pytest.raises(UnknownNameError, match=message):
        build(spec, lower=False)


def test_auto_names_avoid_labels_of_blocks_called_later() -> None:
    spec = """
    block pair(c) { conv(3x3, c) relu: relu }
    net n() {
      input 3x8x8
      relu
      pair(8)
    }
    """
    # the first relu must not take "relu", which the transparent call to pair labels
    assert names(spec) == ["input", "relu_1", "conv", "relu"]


def test_shape_builtins_at_net_level() -> None:
    assert graph("net n() {\n input 3x8x8\n conv(1x1, 4 * in_channels)\n}\n").output.shape == (12, 8, 8)
