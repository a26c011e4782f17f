"""``statehub bench``: run benchmark groups and print their tables."""

from __future__ import annotations

from collections.abc import Callable

import click

from statehub.bench import core
from statehub.bench.table import Result, format_table

#: Group name -> (title, function returning results). Other modules add their groups.
GROUPS: dict[str, tuple[str, Callable[[], list[Result]]]] = {
    "core": ("In-process core", core.run),
}


@click.command()
@click.argument("groups", nargs=-1)
def bench(groups: tuple[str, ...]) -> None:
    """Run benchmark GROUPS (all when none is named) and print a table for each."""
    unknown = [name for name in groups if name not in GROUPS]
    if unknown:
        raise click.BadParameter(
            f"unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}",
            param_hint="GROUPS",
        )
    for name in groups or tuple(GROUPS):
        title, run = GROUPS[name]
        click.echo(format_table(title, run()))
        click.echo()
