"""The package's import graph: no cycles, the core never imports the CLI, backends are never named.

Every `import` and `from ... import` under archc/ counts, also those inside functions (a lazy import
still makes one module depend on the other); the graph is read from the source with `ast`, nothing is
imported to build it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "archc"
BACKENDS = ("archc_torch", "archc_triton", "archc_onnxruntime", "archc_openvino")
# Only the command line may import the command line.
CLI_MODULES = ("archc.cli", "archc.commands")
CLI_IMPORTERS = ("archc.cli", "archc.__main__", "archc.commands")

# Tangles (strongly connected components, their modules sorted) left in place for now. Issue 10 ("no
# back-edges") owns each entry; the list is empty since its fixes, and test_known_cycles_still_exist
# makes a fixed entry leave it.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def module_name(path: Path) -> str:
    """archc/a/b.py -> archc.a.b; archc/a/__init__.py -> archc.a."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module under archc/ by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(path: Path, name: str, known: set[str]) -> set[str]:
    """The dotted names module `name` (file `path`) imports.

    `import a.b` gives a.b; `from a import b` gives a.b where that is one of the `known` modules, else a
    (b is then a name defined in a's __init__: a depends on the package itself).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the archc modules it imports, lazily or not."""
    mods = modules()
    known = set(mods)
    return {
        name: {n for n in imported_names(path, name, known) if n in known and n != name} for name, path in mods.items()
    }


def tangles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(tuple(sorted(scc)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def shortest_cycle(graph: dict[str, set[str]], tangle: tuple[str, ...]) -> list[str]:
    """A shortest cycle from the tangle's first module back to itself, breadth-first inside the tangle."""
    start, inside = tangle[0], set(tangle)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & inside):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {tangle}")


def describe(graph: dict[str, set[str]], tangle: tuple[str, ...]) -> str:
    """One line per tangle: a cycle in it, and all its modules when there are more."""
    cycle = shortest_cycle(graph, tangle)
    more = f" (the tangle: {', '.join(tangle)})" if len(tangle) > len(cycle) - 1 else ""
    return " -> ".join(cycle) + more


def test_tangles_and_their_shortest_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"b"}, "e": {"a"}}
    assert tangles(graph) == [("a", "b", "c", "d")]
    assert shortest_cycle(graph, ("a", "b", "c", "d")) == ["a", "b", "c", "a"]
    assert describe(graph, ("a", "b", "c", "d")) == "a -> b -> c -> a (the tangle: a, b, c, d)"
    assert tangles({"a": {"b"}, "b": set()}) == []


def test_imported_names_resolves_submodules_relative_and_lazy_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "archc" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .mod import f\n")
    (pkg / "mod.py").write_text(
        "import archc.errors\nfrom archc.sub import other, thing\nfrom . import other as o\n"
        "def f():\n    from ..units import si\n    import archc_torch\n"
    )
    known = {"archc.sub", "archc.sub.mod", "archc.sub.other", "archc.units", "archc.errors"}
    assert imported_names(pkg / "__init__.py", "archc.sub", known) == {"archc.sub.mod"}
    got = imported_names(pkg / "mod.py", "archc.sub.mod", known)
    # `thing` is no module: it comes from archc/sub/__init__.py, so mod depends on the package
    assert got == {"archc.errors", "archc.sub.other", "archc.sub", "archc.units", "archc_torch"}


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = [describe(graph, t) for t in tangles(graph) if t not in KNOWN_CYCLES]
    assert not found, "import cycles under archc/:\n" + "\n".join(found)


def test_known_cycles_still_exist() -> None:
    """An exception that no longer applies is removed from KNOWN_CYCLES, so it cannot hide a new cycle."""
    stale = KNOWN_CYCLES - set(tangles(import_graph()))
    assert not stale, f"fixed, remove from KNOWN_CYCLES: {sorted(stale)}"


def _inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_only_the_command_line_imports_the_command_line() -> None:
    bad = sorted(
        f"{mod} imports {dep}"
        for mod, deps in import_graph().items()
        if not _inside(mod, CLI_IMPORTERS)
        for dep in deps
        if _inside(dep, CLI_MODULES)
    )
    assert not bad, "the core imports the CLI:\n" + "\n".join(bad)


def backend_names(path: Path) -> set[str]:
    """String constants in `path` that name a backend's module, as `importlib.import_module` or `sys.modules`
    would take them ("archc_torch", "archc_triton.kernels", "archc_onnxruntime:Backend")."""
    pattern = re.compile(rf"({'|'.join(BACKENDS)})([.:]\w+)*")
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.fullmatch(node.value)
    }


def test_no_backend_imported_by_name() -> None:
    bad = sorted(
        f"{mod} imports {dep}"
        for mod, path in modules().items()
        for dep in imported_names(path, mod, set())
        if _inside(dep, BACKENDS)
    )
    bad += sorted(f"{mod} names {s!r}" for mod, path in modules().items() for s in backend_names(path))
    assert not bad, "backends are found through the archc.backends entry points only:\n" + "\n".join(bad)


def test_backend_names_finds_a_lookup_by_string(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text('"""Uses archc_torch, by entry point."""\nimport sys\nm = sys.modules.get("archc_triton.kernels")\n')
    assert backend_names(src) == {"archc_triton.kernels"}


def test_import_archc_loads_neither_torch_nor_triton() -> None:
    code = "import sys, archc; print(' '.join(m for m in ('torch', 'triton') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == []
