"""``statehub bench``: run benchmark groups and print their tables."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from statehub.bench import (
    clients,
    cluster,
    core,
    dripline,
    durable,
    fanout,
    frames,
    lifetimes,
    momotor,
    network,
    security,
    web,
)
from statehub.bench.table import Result, format_table, machine

#: Groups that print their own table (a column per target, with ratios).
FORMATTERS: dict[str, Callable[[str, list[Result]], str]] = {"client": clients.format_results}

#: Group name -> (title, function returning results). Other modules add their groups.
GROUPS: dict[str, tuple[str, Callable[[], list[Result]]]] = {
    "core": ("In-process core", core.run),
    "lifetimes": (
        "Keys that expire and history of keys (server and clients on loopback, one loop)",
        lifetimes.run,
    ),
    "durable": ("Durable writes (SQLite store, group commit)", durable.run),
    "network": (
        "Network (the default transport, plain TCP, on loopback; subscribers in a separate "
        "process)",
        network.run,
    ),
    "security": (
        "What --auth and TLS cost (the default transport, plain TCP, on loopback)",
        security.run,
    ),
    "web": ("Web edge (WebSocket next to gRPC; room clients in worker processes)", web.run),
    "frames": ("NanoVer frames: a runner's 10,000-atom frame at 30 Hz to a room", frames.run),
    "dripline": ("Dripline mesh (RabbitMQ on loopback) next to statehub's protocol", dripline.run),
    "cluster": ("Cluster (statehub serve processes over one Redis, next to memory)", cluster.run),
    "client": (
        "Public clients (AsyncClient, Client, statehub get) on statehub://, next to --peer",
        clients.run,
    ),
    "fanout": (
        "Fan-out, server ceiling: raw frames over gRPC and plain TCP (no client library), "
        "side by side with --peer",
        fanout.run,
    ),
    "momotor": ("Momotor workers (SharedState) on statehub locks, and AsyncClient", momotor.run),
}


@click.command()
@click.argument("groups", nargs=-1)
@click.option(
    "--host", default=None, help="Run the network group against this server (default: in-process)."
)
@click.option("--port", type=int, default=38802, show_default=True, help="Port with --host.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results to this file as JSON (machine, then each group's rows).",
)
@click.option(
    "--peer",
    type=click.Choice(["redis"]),
    help="client, fanout: run the same workloads on it (redis-py, redis-server).",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="client, fanout: interleaved rounds (medians).",
)
@click.option(
    "--workloads",
    default=",".join(fanout.WORKLOAD_NAMES),
    show_default=True,
    help="fanout: which workload families to run, comma-separated.",
)
def bench(
    groups: tuple[str, ...],
    host: str | None,
    port: int,
    json_path: Path | None,
    peer: str | None,
    rounds: int,
    workloads: str,
) -> None:
    """Run benchmark GROUPS (all when none is named) and print a table for each.

    Progress (the group running, time spent) goes to stderr; the tables to stdout.
    """
    network.TARGET = (host, port) if host is not None else None
    fanout.PEER, fanout.ROUNDS = peer, rounds
    clients.PEER, clients.ROUNDS = peer, rounds
    fanout.WORKLOADS = tuple(name.strip() for name in workloads.split(",") if name.strip())
    if not fanout.WORKLOADS or set(fanout.WORKLOADS) - set(fanout.WORKLOAD_NAMES):
        raise click.BadParameter(
            f"{workloads!r}: choose among {', '.join(fanout.WORKLOAD_NAMES)}",
            param_hint="--workloads",
        )
    if peer == "redis" and fanout.redis_path() is None:
        raise click.ClickException(
            "--peer redis: redis-server is not on PATH (make test installs it)"
        )
    unknown = [name for name in groups if name not in GROUPS]
    if unknown:
        raise click.BadParameter(
            f"unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}",
            param_hint="GROUPS",
        )
    report: dict[str, Any] = {"machine": machine(), "groups": {}}
    chosen = groups or tuple(GROUPS)
    # Imported here, like every table of the CLI: only bench and tables need rich.
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        for number, name in enumerate(chosen, 1):
            title, run = GROUPS[name]
            task = progress.add_task(f"[{number}/{len(chosen)}] {title}", total=None)
            results = run()
            progress.remove_task(task)
            progress.console.print(f"done: {title}")
            click.echo(FORMATTERS.get(name, format_table)(title, results))
            click.echo()
            report["groups"][name] = {"title": title, "results": [asdict(r) for r in results]}
            if json_path is not None:  # written after each group: a long run keeps what it got
                json_path.write_text(json.dumps(report, indent=2) + "\n")
