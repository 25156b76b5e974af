"""`archc list`: the installed spec catalogue, with each network's parameters and multiply-adds."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from archc.commands.options import fail, json_option


def _print_table(rows: list[dict[str, Any]], root: str) -> None:
    from rich import box
    from rich.table import Table

    from archc.console import make_console

    table = Table(title=f"archc catalogue ({root})", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    cells = [
        (r["name"], "x".join(map(str, r["input_shape"])), f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e9:.2f}G")
        for r in rows
    ]
    for i, (head, justify) in enumerate((("name", "left"), ("input", "right"), ("params", "right"), ("MACs", "right"))):
        # the facts keep their full width on a narrow terminal; only the title gives way
        width = max([len(head)] + [len(c[i]) for c in cells])
        table.add_column(head, justify=justify, no_wrap=True, min_width=width)
    table.add_column("title", no_wrap=True, overflow="ellipsis")
    for c, r in zip(cells, rows):
        table.add_row(*c, r["title"])
    make_console().print(table)


def _nothing_matches(patterns: tuple[str, ...]) -> None:
    from archc.errors import ArchcError
    from archc.frontend.catalog import suggest

    plain = [p for p in patterns if not any(c in p for c in "*?[")]
    close = suggest(plain[0]) if plain else None
    hint = f"did you mean '{close}'? " if close else ""
    fail(
        ArchcError(
            f"no catalogue name matches {', '.join(repr(p) for p in patterns)}",
            hint=hint + "patterns are shell wildcards, e.g. 'resnet*'; `archc list` shows every name",
        )
    )


@click.command("list")
@click.argument("patterns", nargs=-1, metavar="[PATTERN]...")
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN", help="Drop names matching (repeatable).")
@json_option()
@click.option("--names", "names_only", is_flag=True, help="Only the names, one a line (no sizes computed).")
def list_(patterns: tuple[str, ...], excludes: tuple[str, ...], as_json: bool, names_only: bool) -> None:
    """List the networks of the installed spec catalogue, with parameters and multiply-adds.

    A catalogue name works wherever a spec path does (`archc build resnet50`,
    `archc.compile("cifar/resnet20")`); a file of that name wins. PATTERNs are
    shell wildcards on the names (any of them matches), like timm.list_models.
    Sizes are computed from the specs when listed (default net parameters).

    \b
    Examples:
      archc list
      archc list 'resnet*' --exclude 'resnet1??'
      archc list 'cifar/*' --json
      archc list --names
    """
    from archc.errors import ArchcError
    from archc.frontend.catalog import root
    from archc.models import list_models

    models = list_models(list(patterns), list(excludes))
    if patterns and not models:
        _nothing_matches(patterns)
        return
    if names_only:
        for m in models:
            click.echo(m.name)
        return
    try:
        rows = [m.as_dict() for m in models]
    except ArchcError as err:  # a broken installed spec: say which, like any spec error
        fail(err)
        return
    where = os.fspath(root()) if root() is not None else None
    if as_json:
        click.echo(json.dumps({"catalogue": where, "models": rows}, indent=1))
    else:
        _print_table(rows, where or "not installed")
