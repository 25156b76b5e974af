"""`archc backends`: the installed backend plugins, where they come from, and whether they run here."""

from __future__ import annotations

import json
from typing import Any

import click

from archc.commands.options import json_option


def describe(name: str, ep: Any) -> dict[str, Any]:
    """One installed backend: its entry point, distribution, and whether it loads and can lower here.

    A backend that loads is asked `available()` (optional in the Backend protocol): None
    means it can lower here, a string says why not (e.g. "needs a GPU ...").
    """
    from archc.backend import get_backend
    from archc.errors import ArchcError

    dist = getattr(ep, "dist", None)
    row: dict[str, Any] = {
        "name": name,
        "entry_point": ep.value,
        "distribution": dist.name if dist is not None else None,
        "version": dist.version if dist is not None else None,
        "backend_version": None,
        "loads": False,
        "available": False,
        "status": "",
    }
    try:
        backend = get_backend(name)
    except ArchcError as err:
        row["status"] = err.message
        return row
    row["loads"] = True
    version = getattr(backend, "version", None)
    row["backend_version"] = None if version is None else str(version)
    check = getattr(backend, "available", None)
    reason = None
    if callable(check):
        try:
            reason = check()
        except Exception as exc:  # a plugin's own check must not take the listing down
            reason = f"availability check failed: {type(exc).__name__}: {exc}"
    row["available"] = reason is None
    row["status"] = "ok" if reason is None else str(reason)
    return row


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from archc.console import make_console

    table = Table(
        title="archc backends (entry-point group archc.backends)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )
    table.add_column("backend", no_wrap=True)
    table.add_column("distribution / entry point", no_wrap=True)
    table.add_column("status")
    for r in rows:
        dist = " ".join(x for x in (r["distribution"], r["version"]) if x) or "?"
        origin = Text(dist)
        origin.append("\n" + r["entry_point"], style="dim")
        status = Text(r["status"], style="green" if r["available"] else ("yellow" if r["loads"] else "red"))
        table.add_row(r["name"], origin, status)
    make_console().print(table)


@click.command("backends")
@json_option()
def backends(as_json: bool) -> None:
    """List the installed backend plugins and whether each can lower on this machine.

    Each backend is loaded and, if it has one, its available() check is run. The
    status is "ok", why it cannot lower here (e.g. "needs a GPU"), or why it
    failed to load.

    \b
    Examples:
      archc backends
      archc backends --json
      archc build specs/cifar/resnet20.arch --backend NAME
    """
    from archc.backend import available

    rows = [describe(name, ep) for name, ep in sorted(available().items())]
    if as_json:
        from archc.backend import GROUP

        click.echo(json.dumps({"group": GROUP, "backends": rows}, indent=1))
    else:
        _print_table(rows)
