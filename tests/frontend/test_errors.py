"""One test per user mistake: the error class, its message, and exactly where it points.

Specs are small and inline (their path is then "<spec>"), or files in tmp_path where
`use` is involved. Every location is checked against the offending token in the spec
text, and the rendered error must show that source line with a caret under the token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from archc.errors import (
    ArchcError,
    ArgumentError,
    LimitError,
    RecursiveBlockError,
    ShapeError,
    SpecSyntaxError,
    UnknownNameError,
    UseError,
)
from archc.frontend import MAX_NODES, elaborate, load
from archc.frontend.elaborate import STEPS_PER_NODE, Elaborator
from archc.ir import Graph

REPO = Path(__file__).resolve().parents[2]


def fail(spec: str | os.PathLike, exc: type[ArchcError] = ArchcError, **kw) -> ArchcError:
    """Load and elaborate `spec`; return the error, which must be an instance of `exc`."""
    with pytest.raises(ArchcError) as info:
        elaborate(load(spec), **kw)
    err = info.value
    assert isinstance(err, exc), f"expected {exc.__name__}, got {type(err).__name__}: {err.render()}"
    return err


def assert_at(err: ArchcError, text: str, line: int, token: str, nth: int = 0, path: str = "<spec>") -> None:
    """The error points at the `nth` occurrence of `token` on `line` of `text`, caret under all of it."""
    src = text.splitlines()[line - 1]
    col = -1
    for _ in range(nth + 1):
        col = src.index(token, col + 1)
    col += 1
    assert err.loc is not None, err.render()
    assert err.loc.source.path == path
    assert (err.loc.line, err.loc.col) == (line, col), f"points at {err.loc}, expected {path}:{line}:{col}"
    out = err.render()
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}:{line}:{col}: error: ")
    assert lines[1].endswith(f"{line} | {src}"), out
    assert lines[2].endswith("| " + " " * (col - 1) + "^" * len(token)), out


# --- syntax -----------------------------------------------------------------------------


def test_unexpected_token() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3 16)\n}\n"
    err = fail(text, SpecSyntaxError)
    assert err.message == "unexpected '16'"
    assert_at(err, text, 3, "16")
    assert "expected" in err.hint and "','" in err.hint


def test_missing_comma_between_arguments() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16 bias=true)\n}\n"
    err = fail(text, SpecSyntaxError)
    assert err.message == "unexpected 'bias'"
    assert_at(err, text, 3, "bias")
    assert "arguments are separated by ','" in err.render()


def test_unexpected_character() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16) $\n}\n"
    err = fail(text, SpecSyntaxError)
    assert err.message == "unexpected character '$'"
    assert_at(err, text, 3, "$")
    assert "hint: " in err.render()


def test_unexpected_end_of_file_missing_brace() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16)\n"
    err = fail(text, SpecSyntaxError)
    assert err.message == "unexpected end of file"
    # points just past the last character of the last line
    assert (err.loc.source.path, err.loc.line, err.loc.col) == ("<spec>", 3, len("  conv(3x3, 16)") + 1)
    assert "'}'" in err.hint and "missing" in err.hint
    assert "    3 |   conv(3x3, 16)" in err.render()


def test_missing_closing_paren() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16\n}\n"
    err = fail(text, SpecSyntaxError)
    assert err.message == "unexpected '}'"
    assert_at(err, text, 4, "}")
    assert "')'" in err.hint


# --- unknown names -------------------------------------------------------------------------


def test_unknown_layer_did_you_mean() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16)\n  rellu\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "unknown layer or block 'rellu'"
    assert_at(err, text, 4, "rellu")
    assert err.hint == "did you mean 'relu'?"
    assert "hint: did you mean 'relu'?" in err.render()


def test_unknown_layer_without_close_match_lists_layers() -> None:
    text = "net n {\n  input 3x32x32\n  qqqqqq\n}\n"
    err = fail(text, UnknownNameError)
    assert_at(err, text, 3, "qqqqqq")
    assert "conv" in err.hint and "maxpool" in err.hint and "use" in err.hint


def test_unknown_block_did_you_mean() -> None:
    text = "block basic(w) {\n  conv(3x3, w)\n}\nnet n {\n  input 3x32x32\n  layer1: basik(16)\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "unknown layer or block 'basik'"
    assert_at(err, text, 6, "basik")
    assert err.hint == "did you mean 'basic'?"


def test_unknown_keyword_of_a_layer() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16, strid=2)\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "'conv' has no parameter 'strid'"
    assert_at(err, text, 3, "strid")
    assert err.hint == "did you mean 'stride'?"


def test_unknown_keyword_of_a_block() -> None:
    text = "block basic(w, stride=1) {\n  conv(3x3, w, /stride)\n}\nnet n {\n  input 3x32x32\n  basic(16, strde=2)\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "block 'basic' has no parameter 'strde'"
    assert_at(err, text, 6, "strde")
    assert err.hint == "did you mean 'stride'?"


def test_unknown_variable() -> None:
    text = "net n(width=16) {\n  input 3x32x32\n  conv(3x3, widht)\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "unknown name 'widht'"
    assert_at(err, text, 3, "widht")
    assert err.hint == "did you mean 'width'?"


def test_unknown_variable_inside_a_block_lists_what_is_in_scope() -> None:
    # `width` belongs to the net; a block sees only its own parameters and in_* shapes
    text = "block b(w) {\n  conv(3x3, width)\n}\nnet n(width=16) {\n  input 3x32x32\n  b(4)\n}\n"
    err = fail(text, UnknownNameError)
    assert_at(err, text, 2, "width")
    assert err.message == "unknown name 'width'"


# --- argument types ---------------------------------------------------------------------------


def test_bool_where_layer_needs_an_integer() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, true)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "'out' must be an integer, got true"
    assert_at(err, text, 3, "true")
    assert err.hint.startswith("usage: conv(")


def test_integer_where_layer_needs_a_bool() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16, bias=3)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "'bias' must be true or false, got 3"
    assert_at(err, text, 3, "bias")


def test_shape_where_layer_needs_an_integer() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16, groups=2x2)\n}\n"
    err = fail(text, ArgumentError)
    assert "'groups' must be an integer" in err.message
    assert_at(err, text, 3, "groups")


def test_symbol_where_block_declared_an_integer_default() -> None:
    text = (
        "block basic(w, stride=1) {\n  conv(3x3, w, /stride)\n}\nnet n {\n  input 3x32x32\n  basic(16, stride=B)\n}\n"
    )
    err = fail(text, ArgumentError)
    assert "'stride' of block 'basic' expects an integer" in err.message
    assert "default 1" in err.message and "got a name B" in err.message
    assert_at(err, text, 6, "stride")


def test_integer_where_block_declared_a_symbol_default() -> None:
    text = "block basic(w, shortcut=B) {\n  conv(3x3, w)\n}\nnet n {\n  input 3x32x32\n  basic(16, 2)\n}\n"
    err = fail(text, ArgumentError)
    assert "'shortcut' of block 'basic' expects a name" in err.message
    assert_at(err, text, 6, "2")


def test_too_many_positional_arguments_of_a_layer() -> None:
    text = "net n {\n  input 3x32x32\n  relu(1)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "too many positional arguments for 'relu'"
    assert_at(err, text, 3, "1")


def test_argument_given_twice() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16, out=8)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "'out' is given twice"
    assert_at(err, text, 3, "out")


# --- missing parameters -------------------------------------------------------------------------


def test_missing_required_parameter_of_a_block() -> None:
    text = "block basic(w, stride=1) {\n  conv(3x3, w, /stride)\n}\nnet n {\n  input 3x32x32\n  basic(stride=2)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "block 'basic' needs parameter 'w'"
    assert_at(err, text, 6, "basic")
    assert err.hint == "block basic(w, stride=...) at <spec>:1:7"


def test_conv_without_out() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "'conv' needs 'out'"
    assert_at(err, text, 3, "conv")
    assert err.hint == "give the output channels: conv(3x3, 64)"


def test_conv_without_kernel() -> None:
    text = "net n {\n  input 3x32x32\n  conv(16)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "'conv' needs 'kernel'"
    assert_at(err, text, 3, "conv")
    assert "3x3" in err.hint


# --- use -------------------------------------------------------------------------------------------


def test_use_file_not_found_in_text_spec() -> None:
    text = 'use "nope/missing.arch"\nnet n {\n  input 3x32x32\n}\n'
    err = fail(text, UseError)
    assert err.message == "cannot find 'nope/missing.arch'"
    assert_at(err, text, 1, '"nope/missing.arch"')
    assert "relative to the file" in err.hint


def test_use_file_not_found_in_a_used_file(tmp_path: Path) -> None:
    main = tmp_path / "main.arch"
    lib = tmp_path / "lib.arch"
    main.write_text('use "lib.arch"\nnet n {\n  input 3x32x32\n}\n')
    lib_text = '# a library\nuse "gone.arch"\n'
    lib.write_text(lib_text)
    err = fail(main, UseError)
    assert err.message == f"cannot find '{tmp_path / 'gone.arch'}'"
    assert_at(err, lib_text, 2, '"gone.arch"', path=str(lib))


def test_use_path_with_a_nul_character() -> None:
    text = 'use "lib\x00.arch"\nnet n {\n  input 3x32x32\n}\n'
    err = fail(text, UseError)
    assert err.message == "a `use` path cannot contain a NUL character"
    assert_at(err, text, 1, '"lib\x00.arch"')


def test_use_path_that_is_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = 'use "."\nnet n {\n  input 3x32x32\n}\n'
    err = fail(text, UseError)
    assert err.message.startswith("cannot read '.'")
    assert_at(err, text, 1, '"."')


def test_spec_file_not_found(tmp_path: Path) -> None:
    err = fail(tmp_path / "nope.arch")
    assert err.message == f"spec file not found: {tmp_path / 'nope.arch'}"
    assert err.loc is None
    assert err.render().startswith("error: spec file not found")


def test_import_cycle(tmp_path: Path) -> None:
    a_text = 'use "b.arch"\nnet n {\n  input 3x32x32\n}\n'
    b_text = '# b needs a\nuse "a.arch"\nblock blk() {\n  relu\n}\n'
    (tmp_path / "a.arch").write_text(a_text)
    (tmp_path / "b.arch").write_text(b_text)
    err = fail(tmp_path / "a.arch", UseError)
    assert err.message == "import cycle: a.arch -> b.arch -> a.arch"
    assert_at(err, b_text, 2, '"a.arch"', path=str(tmp_path / "b.arch"))
    assert "library file" in err.hint


def test_file_that_uses_itself(tmp_path: Path) -> None:
    text = 'use "self.arch"\nnet n {\n  input 3x32x32\n}\n'
    (tmp_path / "self.arch").write_text(text)
    err = fail(tmp_path / "self.arch", UseError)
    assert err.message == "import cycle: self.arch -> self.arch"
    assert_at(err, text, 1, '"self.arch"', path=str(tmp_path / "self.arch"))


def test_error_in_used_file_points_into_that_file(tmp_path: Path) -> None:
    lib_text = "block blk(w) {\n  conv(3x3, w)\n  rellu\n}\n"
    main_text = 'use "lib.arch"\nnet n {\n  input 3x32x32\n  stem: blk(16)\n}\n'
    (tmp_path / "lib.arch").write_text(lib_text)
    (tmp_path / "main.arch").write_text(main_text)
    err = fail(tmp_path / "main.arch", UnknownNameError)
    assert_at(err, lib_text, 3, "rellu", path=str(tmp_path / "lib.arch"))
    assert err.notes == [f"in block 'blk' called at {tmp_path / 'main.arch'}:4:9 (as stem)"]


# --- recursion ----------------------------------------------------------------------------------------


def test_block_that_calls_itself() -> None:
    text = "block b(w) {\n  conv(3x3, w)\n  b(w)\n}\nnet n {\n  input 3x32x32\n  b(16)\n}\n"
    err = fail(text, RecursiveBlockError)
    assert err.message == "block 'b' calls itself (b -> b)"
    assert_at(err, text, 3, "b")
    assert "repeat" in err.hint


def test_blocks_that_call_each_other() -> None:
    text = "block a(w) {\n  b(w)\n}\nblock b(w) {\n  relu\n  a(w)\n}\nnet n {\n  input 3x32x32\n  a(16)\n}\n"
    err = fail(text, RecursiveBlockError)
    assert err.message == "block 'a' calls itself (a -> b -> a)"
    assert_at(err, text, 6, "a")
    assert err.notes == [
        "in block 'b' called at <spec>:2:3 (as the net)",
        "in block 'a' called at <spec>:10:3 (as the net)",
    ]


# --- shapes --------------------------------------------------------------------------------------------


def test_channel_mismatch_at_add_names_the_shortcut_options() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16)\n  add\n}\n"
    err = fail(text, ShapeError)
    assert err.message == "cannot add: channel mismatch: the block makes 16 channels but its shortcut carries 3"
    assert_at(err, text, 4, "add")
    out = err.render()
    assert "option A" in out and "option B or C" in out and "projection" in out and "zero-padded" in out


def test_spatial_mismatch_at_add_names_the_shortcut_options() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 3, /2)\n  add\n}\n"
    err = fail(text, ShapeError)
    assert err.message == "cannot add: spatial mismatch: the block makes 16x16 but its shortcut carries 32x32"
    assert_at(err, text, 4, "add")
    out = err.render()
    assert "option A" in out and "option B or C" in out and "stride" in out and "subsample" in out


def test_mismatch_in_a_strided_residual_block_without_shortcut() -> None:
    text = (
        "block res(w, stride=1) {\n"
        "  conv(3x3, w, /stride)\n"
        "  bn\n"
        "  relu\n"
        "  conv(3x3, w)\n"
        "  bn\n"
        "  add\n"
        "  relu\n"
        "}\n"
        "net n {\n"
        "  input 3x32x32\n"
        "  conv(3x3, 16)\n"
        "  layer1: res(16)\n"
        "  layer2: res(32, stride=2)\n"
        "}\n"
    )
    err = fail(text, ShapeError)
    assert err.message == "cannot add: shape mismatch: the block makes 32x16x16 but its shortcut carries 16x32x32"
    assert_at(err, text, 7, "add")
    assert err.notes == ["in block 'res' called at <spec>:14:11 (as layer2)"]
    assert "option A" in err.hint and "option B or C" in err.hint


def test_kernel_larger_than_the_feature_map() -> None:
    text = "net n {\n  input 3x4x4\n  conv(7x7, 16, padding=0)\n}\n"
    err = fail(text, ShapeError)
    assert err.message.startswith("'conv' makes the 4x4 feature map vanish")
    assert "kernel 7x7" in err.message
    assert_at(err, text, 3, "conv")
    assert "smaller kernel or stride" in err.hint


def test_strides_that_make_the_feature_map_vanish() -> None:
    text = "net n {\n  input 3x8x8\n  conv(3x3, 16, /2)\n  conv(3x3, 16, /2)\n  avgpool(3x3, padding=0)\n}\n"
    err = fail(text, ShapeError)
    assert err.message.startswith("'avgpool' makes the 2x2 feature map vanish")
    assert "gives 0x0" in err.message
    assert_at(err, text, 5, "avgpool")


def test_spatial_layer_after_flatten() -> None:
    text = "net n {\n  input 3x8x8\n  flatten\n  conv(3x3, 16)\n}\n"
    err = fail(text, ShapeError)
    assert "needs a CxHxW feature map" in err.message
    assert_at(err, text, 4, "conv")


# --- names ----------------------------------------------------------------------------------------------


def test_duplicate_layer_names() -> None:
    text = "net n {\n  input 3x32x32\n  c: conv(3x3, 16)\n  relu\n  c: conv(3x3, 16)\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "duplicate layer name 'c'"
    assert_at(err, text, 5, "c")
    assert err.notes == ["first used at <spec>:3:3"]
    assert "unique" in err.hint


def test_duplicate_layer_names_inside_a_block_are_shown_with_their_path() -> None:
    text = "block b(w) {\n  x: conv(3x3, w)\n  x: bn\n}\nnet n {\n  input 3x32x32\n  layer1: b(16)\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "duplicate layer name 'layer1.x'"
    assert_at(err, text, 3, "x")
    assert err.notes[0] == "first used at <spec>:2:3"
    assert err.notes[-1] == "in block 'b' called at <spec>:7:11 (as layer1)"


def test_duplicate_labels_of_add_and_repeat() -> None:
    text = "net n {\n  input 3x32x32\n  s: add\n  s: repeat 2 {\n    relu\n  }\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "duplicate layer name 's'"
    assert_at(err, text, 4, "s")


def test_two_unlabelled_repeats_in_one_scope() -> None:
    # an unlabelled repeat names its iterations 0, 1, ...: the second one clashes with the first
    text = "net n {\n  input 3x32x32\n  repeat 2 {\n    relu\n  }\n  repeat 2 {\n    bn\n  }\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "duplicate layer name '0'"
    assert_at(err, text, 6, "repeat")
    assert err.notes == ["first used at <spec>:3:3"]
    assert "label it" in err.hint


# --- --set overrides ----------------------------------------------------------------------------------------

NET_WITH_WIDTH = "net n(width=16, shortcut=B) {\n  input 3x32x32\n  conv(3x3, width)\n}\n"


def test_set_key_the_net_does_not_have() -> None:
    err = fail(NET_WITH_WIDTH, UnknownNameError, overrides={"widht": "32"})
    assert err.message == "net 'n' has no parameter 'widht' (from --set)"
    assert_at(err, NET_WITH_WIDTH, 1, "n", nth=1)
    assert err.hint == "did you mean 'width'?"


def test_set_key_on_a_net_without_parameters() -> None:
    text = "net n {\n  input 3x32x32\n}\n"
    err = fail(text, UnknownNameError, overrides={"depth": "3"})
    assert err.message == "net 'n' has no parameter 'depth' (from --set)"
    assert err.hint == "its parameters: none"


def test_set_value_of_the_wrong_type() -> None:
    err = fail(NET_WITH_WIDTH, ArgumentError, overrides={"width": "true"})
    assert err.message == "--set width=true: expected an integer like its default 16"
    assert_at(err, NET_WITH_WIDTH, 1, "n", nth=1)


def test_set_unknown_symbol() -> None:
    err = fail(NET_WITH_WIDTH, UnknownNameError, overrides={"shortcut": "D"})
    assert err.message == "--set shortcut=D: unknown value 'D'"


def test_cli_set_key_the_net_does_not_have(tmp_path: Path) -> None:
    spec = tmp_path / "net.arch"
    spec.write_text(NET_WITH_WIDTH)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "archc", "build", str(spec), "--set", "widht=32"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{spec}:1:5: error: net 'n' has no parameter 'widht' (from --set)" in proc.stderr
    assert "hint: did you mean 'width'?" in proc.stderr
    assert "^" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""


# --- size bounds ----------------------------------------------------------------------------------------------


@dataclass
class Work:
    """What the elaborator did before it refused: graph nodes added, block calls and repeat iterations."""

    nodes: int = 0
    steps: int = 0


def _bounded_fail(text: str, exc: type[ArchcError], monkeypatch: pytest.MonkeyPatch, **kw) -> tuple[ArchcError, Work]:
    """Elaborate `text`, which must fail with `exc` within the node and step bounds; return the error and the work.

    A runaway spec is refused after bounded work (counted, not timed): never more nodes than the bound, nor
    more block calls and repeat iterations than the step bound.
    """
    work = Work()
    add_node, step = Graph.add_node, Elaborator._step

    def counted_add_node(self, *a, **k):
        work.nodes += 1
        return add_node(self, *a, **k)

    def counted_step(self, loc):
        work.steps += 1
        return step(self, loc)

    monkeypatch.setattr(Graph, "add_node", counted_add_node)
    monkeypatch.setattr(Elaborator, "_step", counted_step)
    err = fail(text, exc, **kw)
    bound = kw.get("max_nodes", MAX_NODES)
    assert work.nodes <= bound and work.steps <= STEPS_PER_NODE * bound + 1000 + 1, work
    return err, work


def test_repeat_count_in_the_millions(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "net n {\n  input 3x32x32\n  repeat 5000000 {\n    relu\n  }\n}\n"
    err, work = _bounded_fail(text, LimitError, monkeypatch)
    assert work == Work(nodes=1, steps=0), "refused before the first iteration"
    assert err.message == "repeat count 5000000 is past the limit of 100000"
    assert_at(err, text, 3, "5000000")
    assert "typo" in err.hint


def test_nested_repeats_past_the_node_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        "net n {\n  input 3x32x32\n"
        "  repeat 100 {\n    repeat 100 {\n      repeat 100 {\n        relu\n      }\n    }\n  }\n}\n"
    )
    err, work = _bounded_fail(text, LimitError, monkeypatch)
    assert work.nodes == 1 + 100 * 100, "refused after the first outer iteration shows its size"
    assert "past the limit of 100000" in err.message
    assert_at(err, text, 3, "100")


def test_nested_repeats_past_a_small_node_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "net n {\n  input 3x32x32\n  repeat 30 {\n    repeat 30 {\n      relu\n    }\n  }\n}\n"
    err, work = _bounded_fail(text, LimitError, monkeypatch, max_nodes=500)
    assert work.nodes == 1 + 30
    assert "past the limit of 500" in err.message
    assert_at(err, text, 3, "30")


def test_nested_repeats_with_empty_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    # no graph nodes at all, but 10^10 iterations: refused, not run
    text = (
        "net n {\n  input 3x32x32\n"
        "  repeat 99999 {\n    repeat 99999 {\n      if false {\n        relu\n      }\n    }\n  }\n}\n"
    )
    err, work = _bounded_fail(text, LimitError, monkeypatch)
    assert work.nodes == 1 and work.steps == STEPS_PER_NODE * MAX_NODES + 1000 + 1
    assert "block calls and repeat iterations" in err.message
    assert_at(err, text, 4, "99999")


def test_exponential_block_calls_with_empty_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    # b9 makes 10^9 calls of the empty block b0
    calls = {i: " ".join([f"b{i - 1}"] * 10) for i in range(1, 10)}
    blocks = "block b0() {\n}\n" + "".join(f"block b{i}() {{\n  {calls[i]}\n}}\n" for i in range(1, 10))
    text = blocks + "net n {\n  input 3x32x32\n  b9\n}\n"
    err, work = _bounded_fail(text, LimitError, monkeypatch)
    assert work.nodes == 1 and work.steps == STEPS_PER_NODE * MAX_NODES + 1000 + 1
    assert "block calls and repeat iterations" in err.message
    assert err.loc is not None and err.loc.source.path == "<spec>"
    assert err.notes[-1] == f"in block 'b9' called at <spec>:{len(text.splitlines()) - 1}:3 (as the net)"


def test_repeat_with_a_negative_count() -> None:
    text = "net n(k=2) {\n  input 3x32x32\n  repeat 1 - k {\n    relu\n  }\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "repeat count must be an integer >= 0, got -1"
    assert_at(err, text, 3, "1 - k")


# --- nets and blocks ---------------------------------------------------------------------------------------------


def test_net_without_input() -> None:
    text = "net n {\n  conv(3x3, 16)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "net 'n' must start with its input shape"
    assert_at(err, text, 2, "conv")
    assert "input 3x224x224" in err.hint


def test_empty_net() -> None:
    text = "net empty {\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "net 'empty' must start with its input shape"
    assert_at(err, text, 1, "empty")


def test_second_input() -> None:
    text = "net n {\n  input 3x32x32\n  relu\n  input 3x32x32\n}\n"
    err = fail(text, ArgumentError)
    assert "`input` may appear only once" in err.message
    assert_at(err, text, 4, "input")


def test_bad_input_shape() -> None:
    text = "net n {\n  input 3x32\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "input shape must be CxHxW (or a feature count), got 3x32"
    assert_at(err, text, 2, "3x32")


def test_file_with_no_net() -> None:
    text = "block b(w) {\n  conv(3x3, w)\n}\n"
    err = fail(text)
    assert type(err) is ArchcError
    assert err.message == "<spec> defines no net"
    assert_at(err, text, 1, "b", nth=1)
    assert "block libraries are used, not built" in err.hint


def test_empty_file() -> None:
    err = fail("# nothing here\n")
    assert err.message == "<spec> defines no net"


def test_file_with_two_nets() -> None:
    text = "net a {\n  input 3x32x32\n}\nnet b {\n  input 3x32x32\n}\n"
    err = fail(text)
    assert err.message == "<spec> defines 2 nets; a spec builds exactly one"
    assert_at(err, text, 4, "b")
    assert err.notes == ["first net 'a' at <spec>:1:5"]
    assert "its own file" in err.hint


def test_block_with_a_builtin_layer_name() -> None:
    text = "block conv(w) {\n  relu\n}\nnet n {\n  input 3x32x32\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "block 'conv' has the name of a built-in layer"
    assert_at(err, text, 1, "conv")
    assert "another name" in err.hint


def test_block_defined_twice() -> None:
    text = "block b() {\n  relu\n}\nblock b() {\n  bn\n}\nnet n {\n  input 3x32x32\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "block 'b' is defined twice"
    assert_at(err, text, 4, "b", nth=1)
    assert err.notes == ["first defined at <spec>:1:7"]


def test_block_parameter_declared_twice() -> None:
    text = "block b(w, w=2) {\n  relu\n}\nnet n {\n  input 3x32x32\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "parameter 'w' is declared twice"
    assert_at(err, text, 1, "w", nth=1)


# --- expressions --------------------------------------------------------------------------------------------------


def test_if_condition_that_is_not_a_boolean() -> None:
    text = "net n(k=1) {\n  input 3x32x32\n  if k {\n    relu\n  }\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "'if' needs true/false, got an integer"
    assert_at(err, text, 3, "k")
    assert err.hint == "e.g. `if stride != 1`"


def test_conditional_expression_test_that_is_not_a_boolean() -> None:
    text = "net n(k=1) {\n  input 3x32x32\n  conv(3x3, 8 if k else 16)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "'if' needs true/false, got an integer"
    assert_at(err, text, 3, "k")


def test_division_by_zero() -> None:
    text = "net n(k=0) {\n  input 3x32x32\n  conv(3x3, 16 // k)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "division by zero"
    assert_at(err, text, 3, "16 // k")


def test_modulo_by_zero() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, 16 % (2 - 2))\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "division by zero"
    assert_at(err, text, 3, "16 % (2 - 2)")


def test_arithmetic_on_a_shape() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3 * 2, 16)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "'*' needs numbers, got a shape (like 3x3)"
    assert_at(err, text, 3, "3x3 * 2")


def test_comparing_different_kinds_of_values() -> None:
    text = "net n(s=B) {\n  input 3x32x32\n  if s == 1 {\n    relu\n  }\n}\n"
    err = fail(text, ArgumentError)
    assert "compares a name with an integer" in err.message
    assert_at(err, text, 3, "s == 1")


def test_unknown_function() -> None:
    text = "net n {\n  input 3x32x32\n  conv(3x3, mx(8, 16))\n}\n"
    err = fail(text, UnknownNameError)
    assert err.message == "unknown function 'mx'"
    assert_at(err, text, 3, "mx")
    assert err.hint == "did you mean 'max'?"


def test_runaway_integer() -> None:
    text = "net n(k=4294967296) {\n  input 3x32x32\n  conv(3x3, k * k * k)\n}\n"
    err = fail(text, ArgumentError)
    assert err.message == "integer too large"
    assert_at(err, text, 3, "k * k")


# --- notes ----------------------------------------------------------------------------------------------------------


def test_error_in_block_body_notes_the_call_site() -> None:
    text = "block basic(w) {\n  conv(3x3, w)\n  rellu\n}\nnet n {\n  input 3x32x32\n  layer1: basic(16)\n}\n"
    err = fail(text, UnknownNameError)
    assert_at(err, text, 3, "rellu")
    assert err.notes == ["in block 'basic' called at <spec>:7:11 (as layer1)"]
    assert "note: in block 'basic' called at <spec>:7:11 (as layer1)" in err.render()


def test_notes_name_every_call_site_innermost_first() -> None:
    text = (
        "block inner(w) {\n"
        "  conv(3x3, w, bias=1)\n"
        "}\n"
        "block outer(w) {\n"
        "  a: inner(w)\n"
        "}\n"
        "net n {\n"
        "  input 3x32x32\n"
        "  stage: outer(16)\n"
        "}\n"
    )
    err = fail(text, ArgumentError)
    assert_at(err, text, 2, "bias")
    assert err.notes == [
        "in block 'inner' called at <spec>:5:6 (as stage.a)",
        "in block 'outer' called at <spec>:9:10 (as stage)",
    ]
    out = err.render().splitlines()
    assert out[3:5] == ["note: " + n for n in err.notes]
    assert out[-1].startswith("hint: ")


def test_error_in_repeated_block_notes_the_call_site() -> None:
    text = (
        "block blk(w, stride=1) {\n"
        "  conv(3x3, w, /stride)\n"
        "}\n"
        "block stage(w, blocks) {\n"
        "  repeat blocks as i {\n"
        "    blk(w, stride=2 if i == 0 else 0)\n"
        "  }\n"
        "}\n"
        "net n {\n"
        "  input 3x32x32\n"
        "  layer1: stage(16, 3)\n"
        "}\n"
    )
    err = fail(text, ArgumentError)
    assert err.message == "'stride' must be >= 1, got 0"
    assert_at(err, text, 2, "/stride")
    assert err.notes == [
        "in block 'blk' called at <spec>:6:5 (as layer1.1)",
        "in block 'stage' called at <spec>:11:11 (as layer1)",
    ]
