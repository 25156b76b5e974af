"""The spec catalogue: the shipped specs, found by name (`resnet50`, `cifar/resnet20`) wherever archc is installed.

The catalogue is the repository's `specs/` folder, installed as the data-only package `archc_specs`
(pyproject.toml maps it onto `specs/`, so a wheel ships the same files and an editable install reads the
checkout's). A catalogue name is a spec's path below that folder without the `.arch` suffix; the block
libraries in `blocks/` are used, not built, so they are no entries.

One rule resolves a spec for the CLI and the API: spec text stays text; otherwise a path that names a
file is that file (a local file wins), then a catalogue name (the `.arch` suffix may be written), else
an error with a did-you-mean. A `use` looks relative to its file first, then in the catalogue.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from pathlib import Path

from archc.errors import ArchcError, closest

PACKAGE = "archc_specs"
LIBRARIES = "blocks"
SUFFIX = ".arch"


@functools.cache
def root() -> Path | None:
    """The installed catalogue folder, or None when archc_specs is not installed.

    `archc_specs` is a namespace package (specs/ holds no `__init__.py`), so it is located through its
    search locations: importlib.resources cannot read setuptools' editable namespace mapping.
    """
    spec = importlib.util.find_spec(PACKAGE)
    for entry in (spec.submodule_search_locations or ()) if spec is not None else ():
        if os.path.isdir(entry):
            return Path(entry)
    return None


def _order(name: str) -> tuple[int, list[str | int]]:
    # top-level nets before sub-folders, and resnet18 < resnet34 < resnet101, the way a reader expects
    return name.count("/"), [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@functools.cache
def entries() -> dict[str, Path]:
    """Catalogue name -> spec file: top-level names first, then sub-folders, numbers in natural order.

    Returns:
        Every `.arch` file below `root()` except the block libraries; empty when nothing is installed.
    """
    base = root()
    if base is None:
        return {}
    found = {}
    for path in base.rglob("*" + SUFFIX):
        rel = path.relative_to(base)
        if rel.parts[0] != LIBRARIES and path.is_file():
            found[rel.with_suffix("").as_posix()] = path
    return {name: found[name] for name in sorted(found, key=_order)}


def is_text(spec: str | os.PathLike) -> bool:
    """True when `spec` holds .arch text rather than naming a file or a catalogue entry.

    Every net has a `{`, so a single line without one can only be a name.
    """
    return not isinstance(spec, os.PathLike) and ("\n" in spec or "{" in spec)


def lookup(name: str) -> Path | None:
    """The catalogue file for `name` (`resnet50`, `cifar/resnet20`, with or without `.arch`), or None."""
    key = name.replace("\\", "/").strip()
    if key.endswith(SUFFIX):
        key = key[: -len(SUFFIX)]
    return entries().get(key)


def suggest(name: str) -> str | None:
    """The catalogue name the user probably meant by `name`, or None.

    A path whose tail is an entry (`specs/cifar/resnet20.arch`) or a bare name that is unique in a
    sub-folder (`resnet20` for `cifar/resnet20`) gets that entry; otherwise the closest name.
    """
    names = list(entries())
    key = name.replace("\\", "/").strip().removesuffix(SUFFIX)
    parts = [p for p in key.split("/") if p and p != "."]
    for i in range(len(parts)):
        if "/".join(parts[i:]) in names:
            return "/".join(parts[i:])
    tails: dict[str, list[str]] = {}
    for n in names:
        tails.setdefault(n.rsplit("/", 1)[-1], []).append(n)
    aliases = {tail: full[0] for tail, full in tails.items() if len(full) == 1} | {n: n for n in names}
    close = closest(key, aliases)
    return None if close is None else aliases[close]


def resolve(spec: str | os.PathLike) -> str:
    """The file a spec name stands for: the path itself when it names a file, else the catalogue entry.

    Args:
        spec: a path or a catalogue name (not .arch text: see `is_text`).

    Returns:
        The path to read, as given when it is a local file.

    Raises:
        ArchcError: neither a file nor a catalogue name; the hint names the closest entry.
    """
    path = os.fspath(spec)
    try:
        os.lstat(path)
        return path  # anything that exists is the user's file: read_spec says why a directory or FIFO is refused
    except ValueError:
        return path  # a NUL, or a name no file system can hold: read_spec says so
    except OSError:
        pass
    found = lookup(path) if "\0" not in path else None
    if found is not None:
        return str(found)
    close = suggest(path)
    listing = "`archc list` shows the catalogue" if entries() else "no spec catalogue is installed"
    raise ArchcError(
        f"spec file not found: {path}",
        hint="no such file, and no catalogue name; "
        + (f"did you mean '{close}'? " if close else "check the path; ")
        + listing,
    )


def library(path: str) -> str | None:
    """The catalogue's copy of a `use`d library (e.g. `blocks/resnet.arch`), or None.

    Only files inside the catalogue count: `..` cannot climb out of it.
    """
    base = root()
    if base is None or "\0" in path or os.path.isabs(path):
        return None
    target = os.path.normpath(os.path.join(base, path))
    if os.path.commonpath([target, str(base)]) != str(base) or not os.path.isfile(target):
        return None
    return target
