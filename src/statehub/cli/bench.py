"""``statehub bench``: run benchmark groups and print their tables."""

from __future__ import annotations

from collections.abc import Callable

import click

from statehub.bench import cluster, core, durable, network
from statehub.bench.table import Result, format_table

#: Group name -> (title, function returning results). Other modules add their groups.
GROUPS: dict[str, tuple[str, Callable[[], list[Result]]]] = {
    "core": ("In-process core", core.run),
    "durable": ("Durable writes (SQLite store, group commit)", durable.run),
    "network": ("Network (gRPC on loopback; subscribers in a separate process)", network.run),
    "cluster": ("Cluster (statehub serve processes over one Redis, next to memory)", cluster.run),
}


@click.command()
@click.argument("groups", nargs=-1)
@click.option(
    "--host", default=None, help="Run the network group against this server (default: in-process)."
)
@click.option("--port", type=int, default=38801, show_default=True, help="Port with --host.")
def bench(groups: tuple[str, ...], host: str | None, port: int) -> None:
    """Run benchmark GROUPS (all when none is named) and print a table for each."""
    network.TARGET = (host, port) if host is not None else None
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
