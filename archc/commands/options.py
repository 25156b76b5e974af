"""Click options that several commands share, defined once so that they read and behave the same."""

from __future__ import annotations

import click

threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch's CPU threads. [default: the CPUs this process may use (affinity, cgroup quota), "
    "shared among torchrun's local processes; 1 is often faster on a busy machine]",
)
