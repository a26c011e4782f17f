"""``statehub endpoint get|set|cmd|list`` and ``statehub history``: dripline-style endpoints
on a server started with ``statehub serve --config FILE.yaml``, and the history of any key
(``statehub history KEY``; an endpoint's address names its logged values instead).

Values and arguments are JSON when they parse as JSON (``1``, ``2.5``, ``[1, 2]``,
``null``) and plain strings otherwise (``OPEN``); ``--string`` keeps a value a string.
Errors print one line with the dripline return code and exit with status 1.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from statehub.cli.options import client_security, server_options
from statehub.cli.output import emit, output_option
from statehub.client import Client
from statehub.core.key_history import KeyVersion
from statehub.endpoints.return_codes import EndpointError
from statehub.errors import StatehubError

F = TypeVar("F", bound=Callable[..., Any])

_KEYWORD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@contextmanager
def _connected(host: str, port: int) -> Iterator[Client]:
    """A connected client; statehub errors become one-line CLI errors."""
    try:
        with Client(
            host, port, name="statehub-cli", reconnect=False, **client_security()
        ) as client:
            yield client
    except KeyError as error:  # the server has no endpoint.* commands
        raise click.ClickException(
            f"the server at {host} serves no endpoints "
            f"(start it with 'statehub serve --config FILE.yaml'); it said: {error.args[0]}"
        ) from None
    except (StatehubError, TypeError, ValueError) as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from None


def parse_value(text: str, *, string: bool = False) -> Any:
    """JSON if ``text`` parses as JSON, else the text itself (``string``: always text)."""
    if string:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_arguments(arguments: tuple[str, ...]) -> tuple[list[Any], dict[str, Any]]:
    """Command-line ARGUMENTS as positional values and NAME=VALUE keyword values."""
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for argument in arguments:
        match = _KEYWORD.match(argument)
        if match:
            keywords[match.group(1)] = parse_value(match.group(2))
        else:
            positional.append(parse_value(argument))
    return positional, keywords


def parse_since(text: str, now: float) -> float:
    """Seconds since the epoch from ``10m``/``2h``/``1d``/``30s`` ago, an ISO 8601 time
    (naive means UTC) or a number of seconds since the epoch."""
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: use 10m, 2h, 1d, 30s, an ISO 8601 time or epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@click.group()
def endpoint() -> None:
    """Get, set and command dripline-style endpoints (``serve --config``)."""


@endpoint.command(name="get")
@click.argument("address")
@click.option("--specifier", help="An attribute to get instead (is-locked, calibration...).")
@output_option("json")
@server_options
def get_(address: str, specifier: str | None, output: str, host: str, port: int) -> None:
    """Print {value_raw, value_cal} of the endpoint at ADDRESS as JSON."""
    with _connected(host, port) as client:
        _emit_reply(output, client.endpoint_get(address, specifier))


@endpoint.command(name="set")
@click.argument("address")
@click.argument("value")
@click.option("--lockout-key", help="The key the endpoint is locked with.")
@click.option("--string", is_flag=True, help="Send VALUE as a string even if it is JSON.")
@output_option("json")
@server_options
def set_(
    address: str,
    value: str,
    lockout_key: str | None,
    string: bool,
    output: str,
    host: str,
    port: int,
) -> None:
    """Set the endpoint at ADDRESS to VALUE (JSON, or a plain string)."""
    parsed = parse_value(value, string=string)
    with _connected(host, port) as client:
        _emit_reply(output, client.endpoint_set(address, parsed, lockout_key=lockout_key))


@endpoint.command()
@click.argument("address")
@click.argument("method")
@click.argument("arguments", nargs=-1)
@click.option("--lockout-key", help="The key the endpoint or service is locked with.")
@output_option("json")
@server_options
def cmd(
    address: str,
    method: str,
    arguments: tuple[str, ...],
    lockout_key: str | None,
    output: str,
    host: str,
    port: int,
) -> None:
    """Run METHOD on ADDRESS with ARGUMENTS: NAME=VALUE ones are keyword arguments.

    \b
    statehub endpoint cmd my_store lock tag=alice
    statehub endpoint cmd my_store unlock --lockout-key KEY
    statehub endpoint cmd peaches unlock force=true
    statehub endpoint cmd my_store set_condition 3
    """
    positional, keywords = split_arguments(arguments)
    with _connected(host, port) as client:
        result = client.endpoint_cmd(
            address, method, *positional, lockout_key=lockout_key, **keywords
        )
        _emit_reply(output, result)


@endpoint.command(name="list")
@click.argument("service", required=False)
@output_option()
@server_options
def list_(service: str | None, output: str, host: str, port: int) -> None:
    """Print the address of every endpoint (of SERVICE, if given), one per line."""
    with _connected(host, port) as client:
        addresses = client.list_endpoints(service)
    if output == "json":
        click.echo(_dumps(addresses))
    else:
        for address in addresses:
            click.echo(address)


def _emit_reply(output: str, reply: dict[str, Any]) -> None:
    rows = [[key, _dumps(value)] for key, value in reply.items()]
    emit(output, reply, ["field", "value"], rows, empty="{}")


@click.command()
@click.argument("name")
@click.option("--since", help="Only events since: 10m, 2h, 1d, an ISO 8601 time, epoch s.")
@click.option(
    "--since-revision",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="A key's history: only the versions after revision N.",
)
@click.option("--limit", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--key",
    "kind",
    flag_value="key",
    default=None,
    help="NAME is a key (the default unless NAME is an endpoint's address).",
)
@click.option("--endpoint", "kind", flag_value="endpoint", help="NAME is an endpoint's address.")
@server_options
def history(
    name: str,
    since: str | None,
    since_revision: int | None,
    limit: int,
    as_json: bool,
    kind: str | None,
    host: str,
    port: int,
) -> None:
    """Print the history of NAME, oldest first: a key's last versions (kept by a server
    started with --history N), or the logged values of the endpoint at address NAME."""
    start = None if since is None else parse_since(since, dt.datetime.now(dt.UTC).timestamp())
    if kind == "endpoint" and since_revision is not None:
        raise click.UsageError("--since-revision is for a key's history")
    with _connected(host, port) as client:
        events = None
        if kind == "endpoint" or (kind is None and since_revision is None):
            events = _endpoint_events(client, name, start, limit, must=kind == "endpoint")
        if events is None:
            versions = client.history(name, limit=limit, since=since_revision)
            _print_key_history(versions, start, as_json)
            return
    for event in events:
        if as_json:
            click.echo(_dumps(event))
            continue
        click.echo(
            f"{_stamp(event['time'])}  {event['address']}  value_raw={_dumps(event['value_raw'])}  "
            f"value_cal={_dumps(event['value_cal'])}"
        )


def _endpoint_events(
    client: Client, name: str, start: float | None, limit: int, *, must: bool
) -> list[Any] | None:
    """The logged values of the endpoint ``name``; None if the server serves no endpoint of
    that name (and ``must`` is false): NAME is then a key."""
    try:
        return list(client.endpoint_history(name, since=start, limit=limit))
    except (KeyError, EndpointError):
        if must:
            raise
        return None


def _stamp(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _print_key_history(versions: list[KeyVersion], start: float | None, as_json: bool) -> None:
    for version in versions:
        if start is not None and version.time < start:
            continue
        if as_json:
            entry: dict[str, Any] = {
                "key": version.key,
                "revision": version.revision,
                "time": version.time,
                "by": version.by,
                "session": version.session,
                "identity": version.identity,
            }
            entry.update({"removed": True} if version.removed else {"value": version.value})
            click.echo(_dumps(entry))
            continue
        what = "removed" if version.removed else f"value={_dumps(version.value)}"
        who = version.identity if version.identity is not None else version.by
        click.echo(f"{_stamp(version.time)}  revision {version.revision}  {what}  by {who}")
