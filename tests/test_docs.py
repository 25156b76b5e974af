"""The documentation's examples build, and the language reference covers every layer and keyword.

Every ```arch block in README.md, docs/language.md and docs/*.md is a complete spec: it must
elaborate and lint. Fragments are tagged ```text and are not built.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from archc.api import build
from archc.ir import OPS, surface_ops

ROOT = Path(__file__).resolve().parents[1]
LANGUAGE = ROOT / "docs" / "language.md"
GRAMMAR = ROOT / "archc" / "frontend" / "grammar.lark"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_INLINE = re.compile(r"`([^`\n]+)`")


def _doc_files() -> list[Path]:
    files = [ROOT / "README.md", LANGUAGE, *sorted((ROOT / "docs").glob("*.md"))]
    return list(dict.fromkeys(f for f in files if f.is_file()))


def _blocks(path: Path, tag: str) -> list[tuple[int, str]]:
    """(line number, body) of every fenced block tagged `tag` in `path`."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        if m.group(1) == tag:
            out.append((text.count("\n", 0, m.start()) + 1, m.group(2)))
    return out


def _examples() -> list:
    params = []
    for path in _doc_files():
        for line, body in _blocks(path, "arch"):
            rel = path.relative_to(ROOT)
            params.append(pytest.param(body, id=f"{rel}:{line}"))
    return params


EXAMPLES = _examples()


def test_docs_have_examples() -> None:
    assert LANGUAGE.is_file(), "docs/language.md is missing"
    assert len(_blocks(LANGUAGE, "arch")) >= 10
    assert (ROOT / "README.md").is_file()
    assert _blocks(ROOT / "README.md", "arch"), "README.md has no ```arch example"


@pytest.mark.parametrize("text", EXAMPLES)
def test_arch_example_builds(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `use "specs/blocks/resnet.arch"` in spec text is relative to the working directory
    monkeypatch.chdir(ROOT)
    b = build(text, lower=False)
    b.graph.lint()
    assert len(b.graph) >= 2, "an example should contain at least one layer"


def _code_words(text: str) -> set[str]:
    """Every identifier-like word inside inline code spans and fenced code blocks."""
    spans = [m.group(2) for m in _FENCE.finditer(text)]
    outside = _FENCE.sub("", text)
    spans += [m.group(1) for m in _INLINE.finditer(outside)]
    words: set[str] = set()
    for span in spans:
        words |= set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", span))
    return words


def test_language_reference_mentions_every_layer() -> None:
    words = _code_words(LANGUAGE.read_text(encoding="utf-8"))
    layers = surface_ops()  # what a spec can write; fused ops come from passes
    assert "add" in layers and "fused_conv" not in layers
    missing = [op for op in layers if op not in words]
    assert not missing, f"docs/language.md does not document: {missing}"


def test_language_reference_documents_every_attribute() -> None:
    words = _code_words(LANGUAGE.read_text(encoding="utf-8"))
    missing = [f"{op}.{a}" for op in surface_ops() for a in OPS[op].attrs if a not in words]
    assert not missing, f"docs/language.md does not document attributes: {missing}"


def test_language_reference_mentions_every_keyword() -> None:
    keywords = set(re.findall(r'"([a-z_]+)"', GRAMMAR.read_text(encoding="utf-8")))
    assert {"use", "block", "net", "input", "repeat", "as", "if", "elif", "else"} <= keywords
    words = _code_words(LANGUAGE.read_text(encoding="utf-8"))
    missing = sorted(k for k in keywords if k not in words)
    assert not missing, f"docs/language.md does not mention keywords: {missing}"


def test_language_reference_mentions_builtins_and_symbols() -> None:
    from archc.frontend.loader import BUILTIN_SYMBOLS

    words = _code_words(LANGUAGE.read_text(encoding="utf-8"))
    needed = {"in_channels", "in_height", "in_width", "in_features", "min", "max", *BUILTIN_SYMBOLS}
    missing = sorted(needed - words)
    assert not missing, f"docs/language.md does not mention: {missing}"
