"""The rich console every printed table and progress bar goes through (commands and training alike)."""

from __future__ import annotations

import os
from typing import Any


def make_console(stderr: bool = False) -> Any:
    """A rich Console on stdout (or stderr) for every command: colour only on a terminal, none with NO_COLOR.

    rich already leaves out escape codes when stdout is not a TTY (or TERM=dumb); with
    NO_COLOR set it drops colour but keeps bold, so switch styling off completely then.

    Args:
        stderr: print to stderr instead (progress, so that stdout keeps only the result).

    Returns:
        A `rich.console.Console`.
    """
    from rich.console import Console

    return Console(color_system=None, stderr=stderr) if os.environ.get("NO_COLOR") else Console(stderr=stderr)
