"""Fuzzing of the parser and elaborator: whatever the text, the only exception is an ArchcError.

Two sources of input: random text over the language's own tokens (plus stray characters
and unicode), and the shipped specs under specs/ with characters and tokens deleted,
inserted, duplicated, swapped, and numbers replaced by huge, zero or negative ones.
Every example must either elaborate to a graph that passes `lint()` or raise an
ArchcError; any other exception (or a hang) is a compiler bug.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archc.errors import ArchcError
from archc.frontend import elaborate, load
from archc.ir import surface_ops

SPECS = Path(__file__).resolve().parents[2] / "specs"
SPEC_FILES = sorted(SPECS.rglob("*.arch"))
MAX_NODES = 5000

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)


def check(text: str) -> None:
    """The property: elaboration either succeeds (and the IR lints) or raises an ArchcError."""
    try:
        program = load(text)
        graph = elaborate(program, max_nodes=MAX_NODES)
    except ArchcError as err:
        # rendering must work too: it is what the user sees
        assert err.render()
        return
    graph.lint()
    assert 0 < len(graph) <= MAX_NODES


# --- (a) random text over the language's alphabet ----------------------------------

KEYWORDS = [
    "use", "block", "net", "input", "add", "repeat", "as", "named", "from", "if", "elif", "else",
    "and", "or", "not", "true", "false", "min", "max",
]  # fmt: skip
LAYER_NAMES = list(surface_ops())
NAMES = [
    "n", "x", "i", "w", "width", "stride", "out", "kernel", "bias", "padding", "groups", "eps",
    "in_channels", "in_height", "in_width", "in_features", "A", "B", "C", "none", "b", "blk", "_", "a1",
]  # fmt: skip
NUMBERS = [
    "0", "1", "2", "3", "16", "64", "1000", "99999999", "123456789012345678901234567890",
    "3x3", "1x1", "7x7", "0x0", "3x32x32", "3x8x8", "16", "2x2x2x2", "1.5", "1e-5", "0.", "1e400",
]  # fmt: skip
PUNCT = ["/", "{", "}", "(", ")", ",", ":", "=", ";", "+", "-", "*", "//", "%", "->", '"l{i}"', '"{', '}"',
         "==", "!=", "<", "<=", ">", ">=", '"', '"x.arch"', '"."', '"a\x00.arch"', '"../blocks/resnet.arch"',
         "#", "# comment\n"]  # fmt: skip
SPACE = [" ", " ", " ", "\n", "\n", "\t", "\r\n"]

TOKEN = st.one_of(
    st.sampled_from(KEYWORDS),
    st.sampled_from(LAYER_NAMES),
    st.sampled_from(NAMES),
    st.sampled_from(NUMBERS),
    st.sampled_from(PUNCT),
    st.sampled_from(SPACE),
    st.text(max_size=2),  # stray characters, any unicode
)


@st.composite
def token_soup(draw: st.DrawFn) -> str:
    parts = draw(st.lists(TOKEN, max_size=60))
    return " ".join(parts) if draw(st.booleans()) else "".join(parts)


# A skeleton that usually parses, so that the elaborator sees the soup too.
@st.composite
def net_with_soup(draw: st.DrawFn) -> str:
    block = draw(token_soup())
    body = draw(token_soup())
    shape = draw(st.sampled_from(["3x32x32", "3x8x8", "16", "1x1x1", "3x224x224"]))
    return f"block blk(w=16, stride=1) {{\n{block}\n}}\nnet n(k=2, s=B) {{\n  input {shape}\n{body}\n}}\n"


@settings(FUZZ, max_examples=300)
@given(text=token_soup())
def test_token_soup_raises_only_archc_errors(text: str) -> None:
    check(text)


@settings(FUZZ, max_examples=300)
@given(text=net_with_soup())
def test_net_skeleton_with_soup_raises_only_archc_errors(text: str) -> None:
    check(text)


@settings(FUZZ, max_examples=100)
@given(text=st.text(max_size=200))
def test_arbitrary_unicode_raises_only_archc_errors(text: str) -> None:
    check(text)


# --- (b) mutated shipped specs ---------------------------------------------------------

# Tokens and the whitespace between them, so that "".join(tokens) gives the text back.
_TOKEN_RE = re.compile(r"\d+(?:x\d+)+|\d+|[A-Za-z_]\w*|\"[^\"\n]*\"|#[^\n]*|//|==|!=|<=|>=|\s+|.", re.S)
_NUMBER_RE = re.compile(r"\d+(?:x\d+)*")
REPLACEMENTS = [
    "0", "-1", "1", "2", "-0", "999999", "1000000", "99999999999999999999999999", "1" + "0" * 30,
    "0x0", "1x1", "3x0", "99999x99999", "2x2x2", "(0 - 5)", "1.5", "true", "B", "x",
]  # fmt: skip
INSERTS = KEYWORDS + LAYER_NAMES + NAMES + NUMBERS + PUNCT + [
    "\n", " ", "add { relu }", "repeat 3 { relu }", 'use "resnet.arch"\n', 'use "../blocks/cifar.arch"\n', 'use "."\n',
    "-> v\n", "from v\n", "concat { relu }", "mul { avgpool }", "g: { relu }", 'repeat 2 as i named "r{i}" { relu }',
    '"l{i + 1}": ', 'output "o{1}"\n', "chunk(2, 1)", "channel_shuffle(2)",
]  # fmt: skip


def _tokens(text: str) -> list[str]:
    toks = _TOKEN_RE.findall(text)
    assert "".join(toks) == text
    return toks


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    toks = _tokens(text)
    numbers = [i for i, t in enumerate(toks) if _NUMBER_RE.fullmatch(t)]
    for _ in range(draw(st.integers(1, 4))):
        if not toks:
            toks = [""]
        i = draw(st.integers(0, len(toks) - 1))
        op = draw(st.sampled_from(["del_char", "ins_char", "del_tok", "ins_tok", "dup", "swap", "number", "number"]))
        if op == "del_char" and toks[i]:
            k = draw(st.integers(0, len(toks[i]) - 1))
            toks[i] = toks[i][:k] + toks[i][k + 1 :]
        elif op == "ins_char":
            k = draw(st.integers(0, len(toks[i])))
            ch = draw(st.one_of(st.sampled_from('{}()/,:=x0123456789 \n#-*"ab'), st.characters()))
            toks[i] = toks[i][:k] + ch + toks[i][k:]
        elif op == "del_tok":
            j = draw(st.integers(i, min(len(toks), i + 8)))
            del toks[i:j]
        elif op == "ins_tok":
            toks.insert(i, draw(st.sampled_from(INSERTS)))
        elif op == "dup":
            j = draw(st.integers(i, min(len(toks), i + 40)))
            toks[i:i] = toks[i:j]
        elif op == "swap":
            j = draw(st.integers(0, len(toks) - 1))
            toks[i], toks[j] = toks[j], toks[i]
        elif op == "number" and numbers:
            k = draw(st.sampled_from(numbers))
            if k < len(toks):
                toks[k] = draw(st.sampled_from(REPLACEMENTS))
    return "".join(toks)


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: str(p.relative_to(SPECS)))
@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_mutated_spec_raises_only_archc_errors(
    path: Path, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # text specs resolve `use` paths against the working directory
    monkeypatch.chdir(path.parent)
    text = path.read_text()
    check(data.draw(mutated(text), label="mutated spec"))


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: str(p.relative_to(SPECS)))
def test_shipped_spec_passes_the_property_unmutated(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(path.parent)
    check(path.read_text())


# --- (c) grammar-shaped programs, so the elaborator gets deep ----------------------------
#
# Half of the programs are tame: well-typed arguments in range, no unknown names, so that
# they elaborate far (often to the end) and exercise shape inference, blocks, repeats and
# adds. The other half mixes in ill-typed, unbound and out-of-range values everywhere.
# (one_of does not weight repeated branches: values are repeated in sampled_from instead,
# and `_pick` chooses between strategies with weights.)


def _pick(*weighted: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    return st.sampled_from([s for w, s in weighted for _ in range(w)]).flatmap(lambda s: s)


def _maybe(arg: st.SearchStrategy[str], given: int, of: int) -> st.SearchStrategy[str | None]:
    return _pick((given, arg), (of - given, st.none()))


def _grammar(chaos: bool) -> st.SearchStrategy[str]:
    """The program strategy; every name in an expression is bound in the net and in both blocks."""
    odd = ["0", "-1", "99999999999", "123456789012345678901234567890", "1.5", "3x3", "true", "B", "zz", "i"]
    int_atom = st.sampled_from(["1", "2", "4", "8", "16", "k", "w", "stride"] * 6 + (odd if chaos else []))
    symbol = st.sampled_from(["A", "B", "C", "none", "s"] * 4 + (["D", "1"] if chaos else []))
    compare = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
    int_ops = ["+", "-", "*", "//", "%"] if chaos else ["+", "*"]

    def int_expr(depth: int) -> st.SearchStrategy[str]:
        if depth == 0:
            return int_atom
        sub = int_expr(depth - 1)
        return _pick(
            (6, int_atom),
            (2, st.tuples(sub, st.sampled_from(int_ops), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})")),
            (1, st.tuples(sub, bool_expr(depth - 1), sub).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})")),
            (1, st.tuples(st.sampled_from(["min", "max"]), st.lists(sub, min_size=1, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"
            )),
            (1 if chaos else 0, sub.map(lambda e: f"-{e}")),
        )  # fmt: skip

    def bool_expr(depth: int) -> st.SearchStrategy[str]:
        atom = st.one_of(
            st.sampled_from(["true", "false"]),
            st.tuples(symbol, st.sampled_from(["==", "!="]), symbol).map(" ".join),
            st.tuples(int_atom, compare, int_atom).map(" ".join),
        )
        if depth == 0:
            return atom
        sub = bool_expr(depth - 1)
        return _pick(
            (4, atom),
            (1, st.tuples(int_expr(depth - 1), compare, int_expr(depth - 1)).map(lambda t: f"({t[0]} {t[1]} {t[2]})")),
            (1, st.tuples(sub, st.sampled_from(["and", "or"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})")),
            (1, sub.map(lambda e: f"(not {e})")),
        )

    num = int_expr(2)
    small = int_expr(1)
    flag = bool_expr(1)
    stride = st.sampled_from(["1", "2", "stride", "k"] + (["0", "-1", "3x3", "99999999999"] if chaos else []))
    kernel = st.sampled_from(
        ["1x1", "3x3"] * 3 + (["5x5", "7x7", "2x2", "3x1", "0x3", "3x3x3", "3", "0"] if chaos else [])
    )
    flt = st.sampled_from(["1e-5", "0.1", "0.9"] + (["1.5", "0", "-1e-5", "1", "true"] if chaos else []))
    chaos_arg = st.one_of(
        num,
        flag,
        symbol,
        num.map(lambda e: f"/{e}"),
        st.tuples(st.sampled_from(["out", "kernel", "stride", "bias", "eps", "w", "k", "s", "nope"]), num).map(
            "=".join
        ),
    )
    req = 9 if chaos else 10  # how often in ten a required argument is given
    layers: dict[str, list[st.SearchStrategy[str | None]]] = {
        "conv": [
            _maybe(kernel, req, 10),
            _maybe(num, req, 10),
            _maybe(stride.map(lambda e: f"/{e}"), 1, 3),
            _maybe(small.map(lambda e: f"padding={e}"), 1, 6) if chaos else st.none(),
            _maybe(st.sampled_from(["1", "2", "1x2", "k"]).map(lambda e: f"dilation={e}"), 1, 6),
            _maybe(st.sampled_from(["1", "1", "2", "4", "w", "k"]).map(lambda e: f"groups={e}"), 1, 6),
            _maybe(flag.map(lambda e: f"bias={e}"), 1, 4),
        ],
        "bn": [_maybe(flt.map(lambda e: f"eps={e}"), 1, 4), _maybe(flt.map(lambda e: f"momentum={e}"), 1, 4)],
        "relu": [],
        "identity": [],
        "maxpool": [
            _maybe(kernel, req, 10),
            _maybe(stride.map(lambda e: f"/{e}"), 1, 2),
            _maybe(st.sampled_from(["0", "1"] if chaos else ["0"]).map(lambda e: f"padding={e}"), 1, 4),
            _maybe(flag.map(lambda e: f"ceil_mode={e}"), 1, 4),
        ],
        "avgpool": [
            _maybe(kernel, 1, 2),
            _maybe(stride.map(lambda e: f"/{e}"), 1, 3),
            _maybe(flag.map(lambda e: f"ceil_mode={e}"), 1, 4),
        ],
        "subsample": [_maybe(stride.map(lambda e: f"/{e}"), req, 10)],
        "sigmoid": [],
        "hardswish": [],
        "chunk": [_maybe(st.sampled_from(["1", "2", "k"]), req, 10), _maybe(st.sampled_from(["0", "1"]), req, 10)],
        "split": [_maybe(st.sampled_from(["1", "2", "w"]), req, 10), _maybe(st.sampled_from(["0", "1"]), req, 10)],
        "channel_shuffle": [_maybe(st.sampled_from(["1", "2"]), req, 10)],
        "blk": [
            _maybe(num, req, 10),
            _maybe(stride.map(lambda e: f"stride={e}"), 1, 2),
            _maybe(symbol.map(lambda e: f"s={e}"), 1, 2),
        ],
        "blk2": [_maybe(num, 1, 2), _maybe(small.map(lambda e: f"k={e}"), 1, 2)],
    }
    if chaos:  # these change a map into a vector or need a bigger input: the tame programs end with them
        layers |= {
            "flatten": [],
            "linear": [_maybe(num, req, 10), _maybe(flag.map(lambda e: f"bias={e}"), 1, 4)],
            "pad": [_maybe(num, req, 10)],
            "nope": [],
        }
    labels = st.sampled_from(
        [None] * (6 if chaos else 60) + ["a", "b", "conv", "relu", "0", "1", "layer1", "add_1", '"l{k}"', '"x{k + 1}y"']
    )

    @st.composite
    def call(draw: st.DrawFn, callees: list[str]) -> str:
        name = draw(st.sampled_from(callees))
        args = [a for a in (draw(s) for s in layers.get(name, [])) if a is not None]
        if chaos and draw(st.integers(0, 4)) == 0:
            args.insert(draw(st.integers(0, len(args))), draw(chaos_arg))
        return f"{name}({', '.join(args)})" if args or draw(st.booleans()) else name

    @st.composite
    def statement(draw: st.DrawFn, depth: int, callees: list[str]) -> str:
        kinds = ["call"] * 12 + (["add", "repeat", "if", "branches", "group"] * 2 if depth > 0 else [])
        kinds += ["bind"] + (["input", "from", "output"] if chaos else [])
        kind = draw(st.sampled_from(kinds))
        label = draw(labels)
        pre = f"{label}: " if label is not None and kind != "if" else ""
        if kind == "call":
            return pre + draw(call(callees))
        if kind == "input":
            return draw(st.sampled_from(["input 3x8x8", "input 16", "input k"]))
        if kind == "bind":  # name a value and read it back at once (tame), or anywhere (chaos)
            v = f"v{draw(st.integers(0, 3 if chaos else 10**6))}"
            return f"-> {v}\nfrom {v}" if not chaos or draw(st.booleans()) else f"-> {v}"
        if kind == "from":
            return f"from v{draw(st.integers(0, 3))}"
        if kind == "output":
            return draw(st.sampled_from(["output o", 'output "o{k}"', 'output "o{i}"', "output add"]))
        inner = "\n".join(draw(st.lists(statement(depth - 1, callees), max_size=3)))
        if kind == "add":
            return f"{pre}add {{\n{inner}\n}}" if draw(st.booleans()) else f"{pre}add"
        if kind == "branches":
            op = draw(st.sampled_from(["concat", "mul", "add"]))
            more = "\n".join(draw(st.lists(statement(depth - 1, callees), max_size=2)))
            return f"{pre}{op} {{\n{inner}\n}}" + (f" {{\n{more}\n}}" if op == "concat" else "")
        if kind == "group":
            return f"{label or 'g'}: {{\n{inner}\n}}"
        if kind == "repeat":
            counts = ["0", "1", "2", "3", "k"] + (["40", "999", "k * 3000", "-1", "true"] if chaos else [])
            count = draw(st.sampled_from(counts))
            var = draw(st.sampled_from(["", " as i", ' as i named "r{i}"', ' named "r{k}"']))
            return f"{pre}repeat {count}{var} {{\n{inner}\n}}"
        other = "\n".join(draw(st.lists(statement(depth - 1, callees), max_size=2)))
        return f"if {draw(flag)} {{\n{inner}\n}} else {{\n{other}\n}}"

    def body(callees: list[str], min_size: int) -> st.SearchStrategy[str]:
        return st.lists(statement(2, callees), min_size=min_size, max_size=8).map("\n".join)

    plain = [n for n in layers if n not in ("blk", "blk2")]
    # without chaos, blk may call blk2 but not the other way round: no recursion
    blk2_callees = [*plain, "blk"] if chaos else plain
    shapes = ["3x32x32", "3x8x8", "16x4x4", "1x1x1", "3x2x2"] + (["16", "k", "0x8x8", "3x8"] if chaos else [])
    head = st.sampled_from([""] if chaos else ["", "", "avgpool\nflatten\nlinear(10)", "flatten\nlinear(k)"])
    return st.tuples(
        body([*plain, *plain, "blk2"], min_size=2),
        body(blk2_callees, min_size=1),
        st.sampled_from(shapes),
        body([*plain, "blk", "blk2"], min_size=3),
        head,
    ).map(
        lambda t: (
            f"block blk(w, stride=1, s=B, k=2) {{\n{t[0]}\n}}\n"
            f"block blk2(w=4, k=2, s=A, stride=1) {{\n{t[1]}\n}}\n"
            f"net n(k=2, s=B, w=8, stride=2) {{\n  input {t[2]}\n{t[3]}\n{t[4]}\n}}\n"
        )
    )


def program() -> st.SearchStrategy[str]:
    return _pick((1, _grammar(chaos=False)), (1, _grammar(chaos=True)))


@settings(FUZZ, max_examples=300)
@given(text=program())
def test_grammar_shaped_programs_raise_only_archc_errors(text: str) -> None:
    check(text)
