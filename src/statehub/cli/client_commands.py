"""Client commands on an event loop: ``statehub watch | lease | call | commands``
(``get | set | rm`` are in ``key_commands``).

Each talks to a server at ``--host``/``--port``. Bad input and an unreachable server give
a one-line error on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from statehub.cli.client_errors import reported_client_errors
from statehub.cli.key_commands import parse_json
from statehub.cli.options import client_security, server_options
from statehub.cli.output import dumps, emit, output_option
from statehub.client.async_client import AsyncClient
from statehub.client.changes import StateChange

F = TypeVar("F", bound=Callable[..., Any])


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main``, its errors reported as ``reported_client_errors`` says."""

    async def runner() -> None:
        await main()

    with reported_client_errors():
        asyncio.run(runner())


def connect(host: str, port: int, *, reconnect: bool = False) -> AsyncClient:
    """The CLI's client of the server at ``host`` (a URL) and ``port``; use it with async with."""
    return AsyncClient(
        host,
        port,
        name="statehub-cli",
        reconnect=reconnect,
        connect_timeout=5.0,
        **client_security(),
    )


@click.command()
@click.argument("prefix", default="")
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="At most one change per this many seconds (coalesced).",
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N changes.")
@output_option("json")
@server_options
def watch(
    prefix: str, interval: float, count: int | None, output: str, host: str, port: int
) -> None:
    """Print changes to keys under PREFIX, live (Ctrl-C stops).

    The first batch is a snapshot of everything under PREFIX. If the server goes away,
    watch says so on stderr, reconnects, and resumes. ``--output json`` prints one JSON
    line per batch; ``table`` one line per key: revision, key, value (or "removed").
    """

    async def main() -> None:
        async with connect(host, port, reconnect=True) as client:
            client.connection_lost.add_callback(
                lambda reason: click.echo(f"connection lost ({reason}); reconnecting", err=True)
            )
            client.reconnected.add_callback(lambda: click.echo("reconnected", err=True))
            seen = 0
            async with client.subscribe(interval=interval, prefix=prefix) as changes:
                async for change in changes:
                    if output == "json":
                        line = {
                            "revision": change.revision,
                            "snapshot": change.snapshot,
                            "updates": change.updates,
                            "removals": sorted(change.removals),
                        }
                        click.echo(dumps(line))
                    else:
                        _print_change_lines(change)
                    seen += 1
                    if count is not None and seen >= count:
                        return

    run(main)


def _print_change_lines(change: StateChange) -> None:
    if change.snapshot:
        click.echo(f"{change.revision:>10}  (snapshot: {len(change.updates)} keys)")
    for key in sorted(change.updates):
        click.echo(f"{change.revision:>10}  {key}  {dumps(change.updates[key])}")
    for key in sorted(change.removals):
        click.echo(f"{change.revision:>10}  {key}  (removed)")


@click.command()
@click.argument("key")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    help="How long to hold the lease.",
)
@server_options
def lease(key: str, seconds: float, host: str, port: int) -> None:
    """Lease KEY (only this client may change it) for SECONDS, or until Ctrl-C."""
    if not math.isfinite(seconds):
        raise click.BadParameter("must be a finite number", param_hint="--seconds")

    async def main() -> None:
        async with connect(host, port) as client:
            if not await client.attempt_update_locks({key: seconds}):
                raise click.ClickException(f"key {key!r} is leased by another client")
            click.echo(f"leased {key!r} for {seconds:g} s (Ctrl-C releases it)", err=True)
            try:
                await asyncio.sleep(seconds)
            finally:
                if client.connected:
                    await client.attempt_update_locks({key: None})
                    click.echo(f"released {key!r}", err=True)

    run(main)


#: ``statehub lease`` under its name before 0.2: "lock" is the read/write locks' word
#: (``statehub locks``). Deprecated: click says so on stderr each time it runs.
lock = click.Command(
    "lock",
    params=lease.params,
    callback=lease.callback,
    help="Deprecated: use `statehub lease`.",
    hidden=True,
    deprecated="use 'statehub lease' (the same command)",
)


@click.command()
@click.argument("name")
@click.argument("arguments", required=False, default="{}")
@output_option("json")
@server_options
def call(name: str, arguments: str, output: str, host: str, port: int) -> None:
    """Run the server command NAME with ARGUMENTS (a JSON object) and print its result."""
    parsed = parse_json(arguments, "ARGUMENTS")
    if not isinstance(parsed, dict):
        raise click.ClickException(
            f"ARGUMENTS must be a JSON object, got {type(parsed).__name__}: {arguments!r}"
        )

    async def main() -> None:
        async with connect(host, port) as client:
            result = await client.run_command(name, **parsed)
        rows = [[key, dumps(value)] for key, value in (result or {}).items()]
        emit(output, result, ["result", "value"], rows, empty="(no result)")

    run(main)


@click.command()
@output_option()
@server_options
def commands(output: str, host: str, port: int) -> None:
    """List the server's commands and their default arguments."""

    async def main() -> None:
        async with connect(host, port) as client:
            available = await client.available_commands()
        rows = [[name, available[name]] for name in sorted(available)]
        emit(output, available, ["command", "default arguments"], rows, empty="no commands")

    run(main)
