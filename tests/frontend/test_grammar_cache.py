"""The per-user cache of the grammar's LALR tables: read back, they parse exactly like fresh ones."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
from lark import Lark

from archc.errors import SpecSyntaxError
from archc.frontend import grammar_cache, parser
from archc.frontend.grammar_cache import cache_dir, cache_file, cache_name, cached_lark

TEXT = parser._GRAMMAR.read_text()
OPTIONS = parser.LARK_OPTIONS
BROKEN = "net n() {\n  input 3x8x8\n  conv(3x3 8)\n}\n"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "archc"


def parse_with(tables: Lark, text: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """The AST (or the syntax error's text) that `parser.parse` gives with these tables."""
    with monkeypatch.context() as m:
        m.setattr(parser, "_lark", lambda: tables)
        parser._parse.cache_clear()
        try:
            return parser.parse(text, "spec.arch")
        except SpecSyntaxError as e:
            return str(e)
        finally:
            parser._parse.cache_clear()


def test_the_tables_are_built_once_then_read_back(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_file(TEXT, OPTIONS) == cache / cache_name(TEXT, OPTIONS)
    assert not cache_file(TEXT, OPTIONS).exists()
    cached_lark(TEXT, **OPTIONS)
    assert [p.name for p in cache.iterdir()] == [cache_name(TEXT, OPTIONS)]

    class Unbuildable(Lark):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the tables were built again")

    monkeypatch.setattr(grammar_cache, "Lark", Unbuildable)
    assert isinstance(cached_lark(TEXT, **OPTIONS), Lark)


def test_cached_tables_parse_every_spec_like_fresh_ones(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached_lark(TEXT, **OPTIONS)
    loaded, fresh = cached_lark(TEXT, **OPTIONS), Lark(TEXT, parser="lalr", **OPTIONS)
    assert type(loaded.parser) is type(fresh.parser)
    specs = sorted(glob.glob(str(Path(parser.__file__).parents[2] / "specs" / "**" / "*.arch"), recursive=True))
    assert len(specs) > 20
    for text in [Path(s).read_text() for s in specs] + [BROKEN]:
        assert parse_with(loaded, text, monkeypatch) == parse_with(fresh, text, monkeypatch)
    assert "spec.arch:3:12" in parse_with(loaded, BROKEN, monkeypatch)


def test_a_changed_grammar_or_option_gets_its_own_file() -> None:
    names = {
        cache_name(TEXT, OPTIONS),
        cache_name(TEXT + "\n// changed\n", OPTIONS),
        cache_name(TEXT, {**OPTIONS, "maybe_placeholders": False}),
    }
    assert len(names) == 3


def test_a_damaged_file_is_rebuilt_and_replaced(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.mkdir(mode=0o700)
    path = cache / cache_name(TEXT, OPTIONS)
    path.write_bytes(b"not a pickle")
    tables = cached_lark(TEXT, **OPTIONS)
    assert parse_with(tables, BROKEN, monkeypatch) == parse_with(
        Lark(TEXT, parser="lalr", **OPTIONS), BROKEN, monkeypatch
    )
    assert path.read_bytes() != b"not a pickle"
    with path.open("rb") as f:
        assert isinstance(Lark.load(f), Lark)


@pytest.mark.skipif(
    not hasattr(os, "getuid"), reason="the cache directory check needs POSIX owner ids and permission bits"
)
def test_a_directory_others_may_write_to_is_not_used(cache: Path) -> None:
    cache.mkdir()
    cache.chmod(0o777)
    assert cache_dir() is None
    assert isinstance(cached_lark(TEXT, **OPTIONS), Lark)
    assert list(cache.iterdir()) == []
