"""Click options and helpers that the commands share, defined once so that they read and behave the same.

archc/cli.py and every module in archc/commands import from here; nothing here imports the CLI. Module
level stays light (click and the standard library): shell completion imports it on every TAB.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click

from archc.errors import ArchcError

EXIT_SPEC_ERROR = 2

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def fail(err: ArchcError) -> NoReturn:
    """Print `err` with its location and hint to stderr and exit with status 2 (no traceback)."""
    click.echo(err.render(), err=True)
    sys.exit(EXIT_SPEC_ERROR)


def parse_sets(items: tuple[str, ...], flag: str = "--set", empty_values: bool = False) -> dict[str, str]:
    """`KEY=VALUE` arguments as a dict, keys and values stripped.

    Args:
        items: the option's values.
        flag: the option named in the error.
        empty_values: accept `KEY=` (an empty value).

    Raises:
        click.BadParameter: an item without `=`, with an empty key, or (unless `empty_values`) an empty value.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not (empty_values or value.strip()):
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=flag)
        out[key.strip()] = value.strip()
    return out


def parse_passes(passes: str | None) -> list[str] | None:
    """`--passes a,b` as a list; None (the mode's pipeline) when the option is absent."""
    return None if passes is None else [p.strip() for p in passes.split(",") if p.strip()]


class PipelineChoice(click.Choice):
    """The pass pipelines' names (`archc.passes.PIPELINES`) as a click.Choice, read on first use.

    The compiler (and networkx) loads only when a command's --mode is parsed or its help is shown, not
    whenever the CLI starts (`archc list`, shell completion).
    """

    def __init__(self, extra: Sequence[str] = ()) -> None:  # no super().__init__: `choices` is computed
        self.extra = tuple(extra)
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        """`extra` first, then the pipelines in registry order."""
        from archc.passes import PIPELINES

        return (*self.extra, *PIPELINES)


def mode_option(default: str, help: str | None = None, extra: Sequence[str] = ()) -> Decorator:
    """`--mode`: the pass pipeline to run, one of `archc.passes.PIPELINES` (or of `extra`, listed first)."""
    return click.option("--mode", type=PipelineChoice(extra), default=default, show_default=True, help=help)


def complete_backend(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion for --backend: the installed backends' names (nothing is loaded)."""
    from archc.backend import available

    return [name for name in sorted(available()) if name.startswith(incomplete)]


def complete_backends(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion for a comma-separated --backend list: installed names after the last comma."""
    done, _, last = incomplete.rpartition(",")
    prefix = f"{done}," if done else ""
    return [prefix + name for name in complete_backend(ctx, param, last)]


def backend_option(help: str, many: bool = False) -> Decorator:
    """`--backend` (default torch, completed from the installed plugins); `many`: a comma-separated list
    passed as `backends`."""
    return click.option(
        "--backend",
        "backends" if many else "backend",
        default="torch",
        show_default=True,
        shell_complete=complete_backends if many else complete_backend,
        help=help,
    )


def sets_option(help: str = "Set a net parameter (repeatable).", flag: str = "--set", dest: str = "sets") -> Decorator:
    """`--set KEY=VALUE` (or `flag`), repeatable, passed as the tuple `dest` (parse it with `parse_sets`)."""
    return click.option(flag, dest, multiple=True, metavar="KEY=VALUE", help=help)


def passes_option(help: str) -> Decorator:
    """`--passes a,b`: a pass pipeline instead of the mode's (parse it with `parse_passes`)."""
    return click.option("--passes", default=None, help=help)


def json_option(help: str = "Print one JSON object instead of the table.") -> Decorator:
    """`--json`, passed as the flag `as_json`."""
    return click.option("--json", "as_json", is_flag=True, help=help)


threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch's CPU threads. [default: the CPUs this process may use (affinity, cgroup quota), "
    "shared among torchrun's local processes; 1 is often faster on a busy machine]",
)
