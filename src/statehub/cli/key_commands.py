"""Commands on one key: ``statehub get | set | rm``.

They are what people type most, so they take the cheapest route: the blocking ``Client``,
which over plain TCP (the default) does its own socket I/O and imports no asyncio.
Bad input and an unreachable server give a one-line error on stderr and exit status 1.
"""

from __future__ import annotations

import json
from typing import Any

import click

from statehub.cli.client_errors import reported_client_errors
from statehub.cli.options import client_security, server_options
from statehub.cli.output import dumps, emit, output_option
from statehub.client.sync_client import Client

_MISSING = object()


def parse_json(text: str, what: str) -> Any:
    """``text`` as JSON, else a CLI error naming ``what`` and where the JSON went wrong."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise click.ClickException(
            f"{what} is not valid JSON ({error.msg} at char {error.pos}): {text!r}"
        ) from None


def connect(host: str, port: int) -> Client:
    """The blocking client of the server at ``host`` (a URL) and ``port``; one call, no
    reconnect. Use it with ``with``."""
    return Client(
        host, port, name="statehub-cli", reconnect=False, connect_timeout=5.0, **client_security()
    )


@click.command()
@click.argument("key")
@output_option("json")
@server_options
def get(key: str, output: str, host: str, port: int) -> None:
    """Print the value of KEY as JSON."""

    with reported_client_errors(), connect(host, port) as client:
        value = client.get(key, _MISSING)
    if value is _MISSING:
        raise click.ClickException(f"no key {key!r} on the server")
    emit(output, value, ["key", "value"], [[key, dumps(value)]], empty="")


_IF_REVISION_HELP = (
    "Only if KEY's last change is still revision N (`statehub keys --long` shows it); "
    "else nothing changes and the exit status is 1."
)


@click.command(name="set")
@click.argument("key")
@click.argument("value")
@click.option(
    "--if-revision", type=click.IntRange(min=1), default=None, metavar="N", help=_IF_REVISION_HELP
)
@click.option(
    "--if-absent", is_flag=True, help="Only if KEY does not exist (create it, never replace it)."
)
@click.option(
    "--ttl",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Remove KEY after SECONDS (> 0); without it KEY no longer expires.",
)
@server_options
def set_(
    key: str,
    value: str,
    if_revision: int | None,
    if_absent: bool,
    ttl: float | None,
    host: str,
    port: int,
) -> None:
    """Set KEY to VALUE (JSON: 1, 2.5, "text", [1, 2], {"a": null}...)."""
    if if_absent and if_revision is not None:
        raise click.UsageError("--if-revision and --if-absent exclude each other")
    parsed = parse_json(value, "VALUE")
    with reported_client_errors(), connect(host, port) as client:
        revision = client.set(key, parsed, if_revision=if_revision, if_absent=if_absent, ttl=ttl)
    click.echo(f"revision {revision}")


@click.command()
@click.argument("key")
@click.option(
    "--if-revision", type=click.IntRange(min=1), default=None, metavar="N", help=_IF_REVISION_HELP
)
@server_options
def rm(key: str, if_revision: int | None, host: str, port: int) -> None:
    """Remove KEY (exit status 1 and "no key 'KEY'" if there is no such key)."""
    with reported_client_errors(), connect(host, port) as client:
        try:
            revision = client.remove(key, if_revision=if_revision, missing_ok=False)
        except KeyError:
            raise click.ClickException(f"no key {key!r}") from None
    click.echo(f"revision {revision}")
