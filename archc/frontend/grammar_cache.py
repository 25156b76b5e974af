"""The analysed lark grammar, cached per user: a fresh process skips the LALR table construction.

Building the LALR tables for grammar.lark takes about 0.2 s, in every new process; reading them
back takes a few milliseconds. The tables are kept in `$XDG_CACHE_HOME/archc` (default
`~/.cache/archc`), a directory that must belong to the user and be writable by nobody else,
because the file is a pickle and loading a pickle runs code. The file name carries a hash of the
grammar text, the parser options and the lark and Python versions, so a changed grammar or a
new lark never meets an old table. A file is written under a temporary name and renamed into
place, so a process reading it sees a whole file or none. Any problem (no home directory, a
read-only disk, a damaged file) falls back to building the tables: the cache only saves time.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import lark
from lark import Lark


def cache_dir() -> Path | None:
    """The user's archc cache directory, created if missing; None when there is none safe to use."""
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "archc"
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = base.stat()
    except (OSError, RuntimeError):  # RuntimeError: Path.home() without a home directory
        return None
    # a directory others may write to could hand us someone else's pickle
    if st.st_mode & 0o022 or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        return None
    return base


def cache_name(text: str, options: dict[str, Any]) -> str:
    """The cache file name for grammar `text` built with `options`, under this lark and Python."""
    key = repr((text, sorted(options.items()), lark.__version__, sys.version_info[:2]))
    return f"grammar-{hashlib.sha256(key.encode()).hexdigest()[:24]}.lark-tables"


def cache_file(text: str, options: dict[str, Any]) -> Path | None:
    """Where the tables of grammar `text` with `options` are (or would be) cached; None without a cache."""
    folder = cache_dir()
    return None if folder is None else folder / cache_name(text, options)


def cached_lark(text: str, **options: Any) -> Lark:
    """`Lark(text, parser="lalr", **options)`, its tables read from the user's cache when there.

    Args:
        text: the grammar.
        options: Lark options other than the parser (which is LALR, the one lark can save).

    Returns:
        The parser.
    """
    path = cache_file(text, options)
    if path is not None and path.is_file():
        try:
            with path.open("rb") as f:
                return Lark.load(f)
        except Exception:  # a damaged or foreign file: build the tables again and replace it
            pass
    parser = Lark(text, parser="lalr", **options)
    if path is not None:
        _save(parser, path)
    return parser


def _save(parser: Lark, path: Path) -> None:
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".grammar-", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            parser.save(f)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
