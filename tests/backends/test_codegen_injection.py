"""User-controlled strings that reach generated source are escaped or refused, never executed.

The torch backend `exec`s the source it generates, and `archc export --format python` writes
it to a file, so every string that reaches it (the spec's file name, the net, layer, block
and output names, attribute values, the names given on the command line) is tried here as an
injection: a payload that would create the file PWNED in the working directory if it ran.
The property: the generated code is the same code whatever the string (only comments and
docstrings differ), it compiles, and building either works or fails with an ArchcError.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import archc
from archc.backend import get_backend, source_text
from archc.cli import main
from archc.commands.export import python_source
from archc.errors import ArchcError, BackendError
from archc.ir import OPS, Graph

SPEC = "net t {\n  input 3x8x8\n  conv(3x3, 4)\n  relu\n}\n"
PAYLOAD = 'open("PWNED", "w").close()'
# each would run PAYLOAD if written into the source unescaped: after a newline or a carriage
# return (Python ends a line at either), closing a docstring, or continuing a comment's line
EVIL = [
    f"x\n{PAYLOAD}\n#",
    f"x\r{PAYLOAD}\r#",
    f'x"""\n{PAYLOAD}\n"""',
    f"x'''\n{PAYLOAD}\n'''",
    f"x\\\n{PAYLOAD}",
    f"x\u2028{PAYLOAD}",
    f"x\x00{PAYLOAD}",
]
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where PAYLOAD would write PWNED


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output + (
        f"\n{r.exc_info}" if r.exception and not isinstance(r.exception, SystemExit) else ""
    )


def code_of(src: str) -> str:
    """The generated source's code: its AST without docstrings (comments are not in it)."""
    tree = ast.parse(src)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            if isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree)


def shape_of(src: str) -> tuple[list[str], int, set[str]]:
    """What injected code would change even where names differ: imports, statement count, unbound calls."""
    tree = ast.parse(src)
    imports = sorted(ast.dump(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))
    stmts = sum(isinstance(n, ast.stmt) for n in ast.walk(tree))
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    bound |= {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    bound |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    calls = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            while isinstance(f, (ast.Attribute, ast.Call, ast.Subscript)):
                f = f.func if isinstance(f, ast.Call) else f.value
            if isinstance(f, ast.Name) and f.id not in bound:
                calls.add(f.id)
    return imports, stmts, calls


# the code for SPEC from a plain file name: train mode (build, compile) and as exported (eval mode)
BASELINE = get_backend("torch").source(archc.build(SPEC, lower=False).graph, origin="plain.arch")
EXPORTED = python_source(archc.build(SPEC, mode="eval", lower=False), Path("plain.py"), None)[0]
BUILTINS_CALLED = shape_of(BASELINE)[2] | shape_of(EXPORTED)[2]  # super, isinstance, ...


def assert_no_injection(src: str, baseline: str | None = BASELINE) -> None:
    """`src` compiles; with a baseline, it is the baseline's code; without, it imports and calls nothing new."""
    compile(src, "<generated>", "exec")
    assert src.isascii()
    if baseline is not None:
        assert code_of(src) == code_of(baseline)
    imports, _, calls = shape_of(src)
    assert imports == shape_of(BASELINE)[0]
    assert calls <= BUILTINS_CALLED | {"getattr"}, calls
    assert not Path("PWNED").exists()


# --- the spec's file name --------------------------------------------------------------


def test_source_text_is_one_line_that_reads_back() -> None:
    for s in [*EVIL, "resnet50.arch", "r\xe9sum\xe9", "\udcff\udcfe", 'a"b\\c']:
        out = source_text(s)
        assert out.isascii() and out.isprintable() and "\n" not in out and '"' not in out.replace('\\"', "")
        assert ast.literal_eval(f'"""{out} """') == s + " "


@pytest.mark.parametrize("evil", [e for e in EVIL if "\x00" not in e], ids=range(len(EVIL) - 1))
def test_a_file_name_never_reaches_the_code(tmp_path: Path, evil: str) -> None:
    name = evil.replace("/", "_") + ".arch"
    (tmp_path / name).write_text(SPEC)
    module = archc.compile(Path(name))
    assert_no_injection(module.archc_source)
    assert module.archc_source.splitlines()[0] == f"# Generated by archc from {source_text(name)}; do not edit."
    code, out = run("build", name, "-o", "out")
    assert code == 0, out
    assert_no_injection((tmp_path / "out" / "t.py").read_text())
    code, out = run("inspect", name)
    assert code == 0, out
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp_path / "w.safetensors"))
    code, out = run("export", name, "--format", "python", "-o", "e.py", "--weights", "w.safetensors")
    assert code == 0, out
    assert_no_injection((tmp_path / "e.py").read_text(), EXPORTED)
    assert sorted(os.listdir(tmp_path)) == sorted([name, "out", "w.safetensors", "e.py", "e.safetensors"])


@pytest.mark.parametrize("backend", ["torch", "triton", "onnxruntime"])
@pytest.mark.parametrize("evil", EVIL)
def test_every_backends_source_escapes_the_origin(backend: str, evil: str) -> None:
    # `archc build --backend B -o DIR` writes B's source() with the spec's file name as its origin
    g = archc.build(SPEC, mode="eval", lower=False).graph
    b = get_backend(backend)
    src = b.source(g, origin=evil)
    compile(src, "generated", "exec")
    assert code_of(src) == code_of(b.source(g, origin="t.arch"))  # only comments and docstrings differ


def test_a_file_name_with_a_nul_is_an_error() -> None:
    with pytest.raises(ArchcError, match="cannot contain a NUL"):
        archc.compile(Path(EVIL[-1] + ".arch"))


def test_an_undecodable_file_name_builds_and_exports(tmp_path: Path) -> None:
    name = os.fsdecode(b"\xff\xfe.arch")  # surrogate escapes, as Python decodes a non-UTF-8 name
    try:
        (tmp_path / name).write_text(SPEC)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    src = archc.compile(Path(name)).archc_source
    assert_no_injection(src)
    assert "\\udcff\\udcfe.arch" in src.splitlines()[0]
    for args in (["build", name, "-o", "out"], ["export", name, "--format", "python", "-o", "e.py"]):
        code, out = run(*args)
        assert code == 0 and "Traceback" not in out, out
    assert_no_injection((tmp_path / "e.py").read_text(), EXPORTED)
    assert_no_injection((tmp_path / "out" / "t.py").read_text())


def test_an_export_file_name_never_reaches_the_code(tmp_path: Path) -> None:
    (tmp_path / "t.arch").write_text(SPEC)
    save_file({k: v.contiguous() for k, v in archc.compile(SPEC).state_dict().items()}, str(tmp_path / "w.safetensors"))
    for evil in EVIL[:5]:
        out = evil.replace("/", "_") + ".py"
        code, text = run("export", "t.arch", "--format", "python", "-o", out, "--weights", "w.safetensors")
        assert code == 0, text
        src = (tmp_path / out).read_text()
        assert_no_injection(src, EXPORTED)
        doc = ast.get_docstring(ast.parse(src)) or ""
        assert f"load_file({evil.replace('/', '_') + '.safetensors'!r})" in doc  # the example still runs


# --- names and attributes in the spec, the IR and on the command line ---------------------


@pytest.mark.parametrize(
    "text",
    [
        f'net t {{\n  input 3x8x8\n  a"; {PAYLOAD}: conv(3x3, 4)\n}}\n',  # a label
        f"net t\n{PAYLOAD} {{\n  input 3x8x8\n}}\n",  # the net's name
        f"block b() {{ relu }}\nblock {PAYLOAD}() {{ relu }}\nnet t {{\n  input 3x8x8\n  b\n}}\n",  # a block name
        f"net t {{\n  input 3x8x8\n  conv(3x3, 4)\n  output o\n{PAYLOAD}\n}}\n",  # an output name
        f'net t {{\n  input 3x8x8\n  conv(3x3, 4, bias="{PAYLOAD}")\n}}\n',  # an attribute value
        "net t {\n  input 3x8x8\n  conv(3x3, 4, bias=open)\n}\n",  # a name where a flag belongs
    ],
)
def test_names_and_values_in_a_spec_cannot_carry_code(tmp_path: Path, text: str) -> None:
    (tmp_path / "t.arch").write_text(text)
    code, out = run("build", "t.arch")
    assert code == 2 and "Traceback" not in out and out.count("error:") == 1, out
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("value", [f'3x8x8"); {PAYLOAD}; ("', f"A\n{PAYLOAD}", "open"])
def test_set_values_cannot_carry_code(tmp_path: Path, value: str) -> None:
    (tmp_path / "t.arch").write_text("net t(size=3x8x8, mode=none) {\n  input size\n  conv(3x3, 4)\n}\n")
    for key in ("size", "mode"):
        code, out = run("build", "t.arch", "--set", f"{key}={value}")
        assert code == 2 and "Traceback" not in out, out
    assert not (tmp_path / "PWNED").exists()


def evil_graph(net: str, label: str, output: str) -> Graph:
    """input -> conv (named `label`) -> relu, built through the IR API with any names."""
    g = Graph(net)
    g.add_node("input", "input", (), {"shape": (3, 8, 8)}, (3, 8, 8))
    attrs = OPS["conv"].check_attrs({"kernel": (3, 3), "out": 4})
    g.add_node(label, "conv", ("input",), attrs, OPS["conv"].infer(attrs, [(3, 8, 8)]), labelled=True)
    g.add_node("relu", "relu", (label,), {}, (4, 8, 8))
    g.outputs, g.output_names = ["relu"], [output]
    return g


def build_or_refuse(graph: Graph, origin: str = "t.arch") -> None:
    """Generate and lower `graph`: the source must be clean, and lowering work or raise an ArchcError."""
    backend = get_backend("torch")
    try:
        src = backend.source(graph, origin=origin)
    except ArchcError:
        return
    assert_no_injection(src, None)
    try:
        backend.lower(graph, origin=origin)
    except ArchcError as err:
        assert err.render()
    assert not Path("PWNED").exists()


@pytest.mark.parametrize("evil", EVIL)
def test_names_in_the_graph_never_reach_the_code(evil: str) -> None:
    build_or_refuse(evil_graph(evil, "conv", "out"))
    build_or_refuse(evil_graph("t", evil.replace(".", "_"), "out"))  # a dot in a name makes a scope
    build_or_refuse(evil_graph("t", "a.0." + evil.replace(".", "_"), evil))


@pytest.mark.parametrize(
    "key, value",
    [
        ("act", f"relu'); {PAYLOAD}; ('"),
        ("act", "relu\n"),
        ("out", f"4); {PAYLOAD}; ("),
        ("out", "open"),
        ("bias", "True"),
        ("eps", float("nan")),
        ("folded_bn", f"bn); {PAYLOAD}"),
    ],
)
def test_attribute_values_that_are_not_literals_are_refused(key: str, value: object) -> None:
    g = archc.build("net t {\n  input 3x8x8\n  conv(3x3, 4)\n  bn\n  relu\n}\n", mode="eval", lower=False).graph
    node = next(n for n in g.nodes() if n.op == "fused_conv")
    node.attrs[key] = value
    with pytest.raises(BackendError, match=f"attribute {key}=") as info:
        get_backend("torch").source(g)
    assert "generated code cannot hold" in info.value.message
    assert not Path("PWNED").exists()


# --- fuzzing: any string, as a file name, a name, an attribute, an export file name ------------

ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=24) | st.text(max_size=8)  # surrogates too
NAMEISH = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True) | st.sampled_from(
    ["0", "12", "forward", "training", "self", "x", "torch", "nn", "F", "Scope", "init_weights", "T", "conv", "import"]
)


@FUZZ
@given(name=ANY_TEXT | st.sampled_from(EVIL))
def test_fuzz_file_names(tmp_path: Path, name: str) -> None:
    path = Path(name.replace("/", "_") + ".arch")
    try:
        (tmp_path / path).write_text(SPEC)
    except (OSError, ValueError):  # no such file can exist here: reading it is an ArchcError
        with pytest.raises(ArchcError):
            archc.compile(path)
        return
    try:
        module = archc.compile(path)
    except ArchcError as err:
        assert err.render()
        return
    finally:
        (tmp_path / path).unlink()
    assert_no_injection(module.archc_source)


@FUZZ
@given(label=NAMEISH | ANY_TEXT, net=NAMEISH | ANY_TEXT, block=NAMEISH | ANY_TEXT, output=NAMEISH | ANY_TEXT)
def test_fuzz_names_in_a_spec(label: str, net: str, block: str, output: str) -> None:
    text = (
        f"block {block}() {{\n  relu\n}}\n"
        f"net {net} {{\n  input 3x8x8\n  {label}: conv(3x3, 4)\n  {block}\n  output {output}\n}}\n"
    )
    try:
        graph = archc.build(text, lower=False).graph
    except ArchcError as err:
        assert err.render()
        return
    build_or_refuse(graph)


@FUZZ
@given(key=st.sampled_from(["act", "folded_bn", "out", "bias", "eps"]), value=NAMEISH | ANY_TEXT)
def test_fuzz_attribute_strings(key: str, value: str) -> None:
    g = archc.build("net t {\n  input 3x8x8\n  conv(3x3, 4)\n  bn\n  relu\n}\n", mode="eval", lower=False).graph
    next(n for n in g.nodes() if n.op == "fused_conv").attrs[key] = value
    build_or_refuse(g)


@FUZZ
@given(out=ANY_TEXT | st.sampled_from(EVIL), origin=ANY_TEXT | st.sampled_from(EVIL))
def test_fuzz_export_file_names(tmp_path: Path, out: str, origin: str) -> None:
    b = archc.build(SPEC, lower=False)
    b.origin = origin
    target = tmp_path / (out.replace("/", "_") + ".py")
    src, cls = python_source(b, target, target.with_suffix(".safetensors"))
    assert_no_injection(src)
    assert cls == "T"
