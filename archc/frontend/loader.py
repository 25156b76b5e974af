"""Load a spec and the block libraries it `use`s into one Program."""

from __future__ import annotations

import os
from dataclasses import dataclass

from archc.errors import ArchcError, Loc, UnknownNameError, UseError
from archc.frontend import ast, catalog
from archc.frontend.parser import KEYWORDS, parse
from archc.frontend.sources import check_size, read_spec
from archc.ir.registry import OPS, symbol_values

# Symbols every spec may use: the paper's shortcut options and "none" (plain nets).
BUILTIN_SYMBOLS = frozenset({"A", "B", "C", "none"})
# Variables bound to the shape of a block's input; parameters cannot take these names.
BUILTIN_VARIABLES = frozenset({"in_channels", "in_height", "in_width", "in_features"})


def check_params(params: tuple[ast.Param, ...]) -> None:
    """Refuse a parameter list that repeats a name or uses a built-in variable's name."""
    names = {p.name for p in params}
    seen: set[str] = set()
    for p in params:
        if isinstance(p.default, ast.Name) and p.default.id in names:
            raise UnknownNameError(
                f"the default of '{p.name}' names the parameter '{p.default.id}'",
                p.default.loc,
                hint="defaults are constants (a bare name there is a symbol); pass the value at the call instead",
            )
        if p.name in KEYWORDS:
            raise UnknownNameError(f"'{p.name}' is a keyword and cannot name a parameter", p.loc)
        if p.name in seen:
            raise UnknownNameError(f"parameter '{p.name}' is declared twice", p.loc)
        if p.name in BUILTIN_VARIABLES:
            raise UnknownNameError(
                f"parameter name '{p.name}' is reserved",
                p.loc,
                hint=f"{', '.join(sorted(BUILTIN_VARIABLES))} are set from the input's shape; pick another name",
            )
        seen.add(p.name)


@dataclass(frozen=True)
class Program:
    """A net and every block visible to it.

    Attributes:
        net: the net defined in the main file.
        blocks: block name -> definition, from the main file and all `use`d files.
        symbols: names that may be written as symbol values (builtins and every
            symbol used as a parameter default).
        root: directory of the main file (or the working directory for text specs);
            IR locations are shown relative to it.
    """

    net: ast.Net
    blocks: dict[str, ast.Block]
    symbols: frozenset[str]
    root: str


def _symbol_defaults(params: tuple[ast.Param, ...]) -> set[str]:
    return {p.default.id for p in params if isinstance(p.default, ast.Name)}


class _Loader:
    def __init__(self) -> None:
        self.blocks: dict[str, ast.Block] = {}
        self.done: set[str] = set()
        self.stack: list[str] = []
        self.symbols: set[str] = set(BUILTIN_SYMBOLS) | symbol_values()

    def load_file(self, path: str, shown: str, use_loc: Loc | None) -> ast.Module:
        text = read_spec(path, shown, use_loc)
        real = os.path.realpath(path)
        if real in self.stack:
            chain = " -> ".join(os.path.basename(p) for p in self.stack[self.stack.index(real) :])
            raise UseError(
                f"import cycle: {chain} -> {os.path.basename(real)}",
                use_loc,
                hint="move the shared blocks into a library file that both can use",
            )
        return self.load_text(text, shown, real)

    def load_text(self, text: str, shown: str, real: str) -> ast.Module:
        module = parse(text, shown)
        self.stack.append(real)
        base = os.path.dirname(real)
        shown_base = os.path.dirname(shown)
        for use in module.uses:
            if "\0" in use.path:  # the OS refuses such paths with a ValueError, not an OSError
                raise UseError("a `use` path cannot contain a NUL character", use.loc)
            target = os.path.normpath(os.path.join(base, use.path))
            shown_use = os.path.normpath(os.path.join(shown_base, use.path))
            installed = None if os.path.exists(target) else catalog.library(use.path)
            if installed is not None:  # relative to the file first, then the installed catalogue
                target = shown_use = installed
            if os.path.realpath(target) in self.done:
                continue
            self.load_file(target, shown_use, use.loc)
        self.stack.pop()
        self.done.add(real)
        for block in module.blocks:
            self.add_block(block)
        for net in module.nets:
            self.symbols |= _symbol_defaults(net.params)
        return module

    def add_block(self, block: ast.Block) -> None:
        if block.name in KEYWORDS:
            raise UnknownNameError(f"'{block.name}' is a keyword and cannot name a block", block.loc)
        if block.name in OPS:
            raise UnknownNameError(
                f"block '{block.name}' has the name of a built-in layer",
                block.loc,
                hint="choose another name for the block",
            )
        if block.name in self.blocks:
            first = self.blocks[block.name]
            raise UnknownNameError(
                f"block '{block.name}' is defined twice",
                block.loc,
                notes=[f"first defined at {first.loc}"],
                hint="rename one of them",
            )
        check_params(block.params)
        self.blocks[block.name] = block
        self.symbols |= _symbol_defaults(block.params)


def _pick_net(module: ast.Module, source_name: str) -> ast.Net:
    if len(module.nets) == 1:
        return module.nets[0]
    if not module.nets:
        loc = module.blocks[-1].loc if module.blocks else None
        raise ArchcError(
            f"{source_name} defines no net",
            loc,
            hint="a spec needs `net name(params) { input 3x224x224 ... }`; block libraries are used, not built",
        )
    second = module.nets[1]
    raise ArchcError(
        f"{source_name} defines {len(module.nets)} nets; a spec builds exactly one",
        second.loc,
        notes=[f"first net '{module.nets[0].name}' at {module.nets[0].loc}"],
        hint="put each net in its own file and share blocks through `use`",
    )


def looks_like_path(spec: str | os.PathLike) -> bool:
    """True when `spec` names a file or a catalogue entry rather than holding .arch text."""
    return not catalog.is_text(spec)


def load(spec: str | os.PathLike) -> Program:
    """Load a spec file (or .arch text) and everything it uses.

    Args:
        spec: a path to a `.arch` file, a catalogue name (`resnet50`; a file of that name wins),
            or the text of one (its `use` paths are then relative to the working directory).

    Returns:
        The Program for the spec's net.

    Raises:
        ArchcError: any syntax, import or definition error, with its location.
    """
    loader = _Loader()
    if looks_like_path(spec):
        shown = catalog.resolve(spec)
        module = loader.load_file(shown, shown, None)
        root = os.path.dirname(os.path.realpath(shown))
    else:
        shown = "<spec>"
        check_size(len(str(spec)), shown)  # characters: at most its UTF-8 bytes
        module = loader.load_text(str(spec), shown, os.path.join(os.getcwd(), "<spec>"))
        root = os.getcwd()
    net = _pick_net(module, shown)
    check_params(net.params)
    return Program(net, loader.blocks, frozenset(loader.symbols), root)
