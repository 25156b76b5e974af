"""The backend plugin contract and discovery through the `archc.backends` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from archc.errors import BackendError, did_you_mean

if TYPE_CHECKING:
    from archc.ir import Graph

GROUP = "archc.backends"


@runtime_checkable
class Backend(Protocol):
    """What a backend plugin provides.

    A plugin registers a class (or factory) under the entry-point group
    `archc.backends`; archc instantiates it with no arguments. The contract in
    full is docs/backends.md.

    Optional members, not checked by isinstance (a backend without them still loads):
        version: a version string, shown by `archc backends`.
        available() -> str | None: a cheap check, without building anything, of whether
            lower() can run on this machine: None if it can, else a short reason that
            `archc backends` shows, e.g. "needs a GPU (TRITON_INTERPRET=1 for the CPU
            interpreter)".

    Attributes:
        name: the name users pass as `backend=` / `--backend`.
    """

    name: str

    def lower(self, graph: Graph, **options: Any) -> Any:
        """Turn a checked graph into a trainable `torch.nn.Module`."""
        ...

    def source(self, graph: Graph, origin: str = "a spec") -> str:
        """Return standalone Python source that rebuilds the module (imports only torch)."""
        ...


def source_text(text: str) -> str:
    """`text` (a file name, a net name) made safe for a comment or a docstring of generated source.

    Backslashes and double quotes get a backslash, and every character that is not printable
    ASCII (newlines and other line breaks, control characters, the surrogates of an undecodable
    file name, any non-ASCII letter) is written as its Python escape. The result is one line
    of printable ASCII that can end neither a `#` comment nor a triple-quoted string, and a
    docstring holding it reads back as `text`.
    """
    return "".join("\\" + c if c in '"\\' else c if c.isascii() and c.isprintable() else ascii(c)[1:-1] for c in text)


def available() -> dict[str, Any]:
    """Installed backends: name -> entry point (not yet loaded)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def get_backend(name: str) -> Backend:
    """Load and instantiate the backend registered as `name`.

    Raises:
        BackendError: no such backend is installed, or it fails to load.
    """
    eps = available()
    ep = eps.get(name)
    if ep is None:
        raise BackendError(
            f"unknown backend '{name}'",
            hint=did_you_mean(name, eps) or f"installed backends: {', '.join(sorted(eps)) or 'none'}",
        )
    try:
        backend = ep.load()()
    except Exception as exc:  # a broken plugin must not take the compiler down with a traceback
        raise BackendError(f"backend '{name}' ({ep.value}) failed to load: {exc}") from exc
    if not isinstance(backend, Backend):
        raise BackendError(f"backend '{name}' ({ep.value}) does not provide name, lower() and source()")
    return backend
