"""``statehub dripline get|set|cmd``: talk to any dripline service on a RabbitMQ broker.

Prints the reply's payload as JSON; a warning code (1-99) goes to stderr with its
message, an error code (>= 100) is one line ``Error: <code> <name>: <message>`` and exit
status 1. Values are JSON when they parse as JSON, plain strings otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import click

from statehub.cli.endpoint import parse_value, split_arguments
from statehub.endpoints.return_codes import EndpointError
from statehub.extras import require_extra

BROKER_VARIABLE = "DRIPLINE_BROKER"


def _options(function: Any) -> Any:
    for option in reversed(
        (
            click.option(
                "--broker",
                envvar=BROKER_VARIABLE,
                default=None,
                metavar="URL",
                help=f"The broker (also ${BROKER_VARIABLE}; default: the --config file's, else "
                "amqp://localhost:5672/); user and password from the URL, else "
                "DRIPLINE_USER/DRIPLINE_PASSWORD, else guest.",
            ),
            click.option(
                "--config",
                "config_path",
                type=click.Path(dir_okay=False, exists=True),
                default=None,
                help="A YAML file whose dripline_mesh block names the broker, exchanges, "
                "payload size and auth_file (a dripline or statehub configuration).",
            ),
            click.option("--specifier", "-s", help="The specifier (for cmd: the method)."),
            click.option("--lockout-key", help="The key the endpoint is locked with."),
            click.option(
                "--timeout",
                type=click.FloatRange(0, min_open=True),
                default=10.0,
                show_default=True,
                help="Seconds to wait for the reply.",
            ),
        )
    ):
        function = option(function)
    return function


def _send(
    broker: str | None,
    config_path: str | None,
    operation: str,
    target: str,
    payload: Any,
    specifier: str | None,
    lockout_key: str | None,
    timeout: float,
) -> None:
    require_extra("dripline", "statehub dripline")
    from statehub.dripline import wire
    from statehub.dripline.client import DriplineClient
    from statehub.dripline.settings import MeshSettingsError, block_from_file, mesh_settings

    try:
        block = block_from_file(config_path) if config_path is not None else None
        settings = mesh_settings(broker, block)
        with DriplineClient(settings=settings, timeout=timeout, name="statehub-cli") as client:
            reply = client.request(
                target,
                wire.OPERATIONS[operation],
                payload,
                specifier=specifier,
                lockout_key=lockout_key,
                timeout=timeout,
            )
    except (EndpointError, MeshSettingsError) as error:
        raise click.ClickException(str(error)) from None
    if reply.return_code != 0:
        click.echo(f"return code {reply.return_code}: {reply.return_message}", err=True)
    click.echo(json.dumps(reply.payload, ensure_ascii=False))


@click.group()
def dripline() -> None:
    """Get, set and command endpoints of any dripline service on a broker."""


@dripline.command(name="get")
@click.argument("target")
@_options
def get_(
    target: str,
    broker: str | None,
    config_path: str | None,
    specifier: str | None,
    lockout_key: str | None,
    timeout: float,
) -> None:
    """Print the reply to a get of TARGET (a routing key: endpoint or service name)."""
    _send(broker, config_path, "get", target, None, specifier, lockout_key, timeout)


@dripline.command(name="set")
@click.argument("target")
@click.argument("value")
@_options
def set_(
    target: str,
    value: str,
    broker: str | None,
    config_path: str | None,
    specifier: str | None,
    lockout_key: str | None,
    timeout: float,
) -> None:
    """Set TARGET to VALUE (sent as {"values": [VALUE]})."""
    payload = {"values": [parse_value(value)]}
    _send(broker, config_path, "set", target, payload, specifier, lockout_key, timeout)


@dripline.command()
@click.argument("target")
@click.argument("values", nargs=-1)
@_options
def cmd(
    target: str,
    values: tuple[str, ...],
    broker: str | None,
    config_path: str | None,
    specifier: str | None,
    lockout_key: str | None,
    timeout: float,
) -> None:
    """Run the method --specifier (or TARGET's last part) on TARGET with VALUES;
    NAME=VALUE ones are keyword arguments.

    \b
    statehub dripline cmd peaches -s lock
    statehub dripline cmd peaches -s unlock force=true
    statehub dripline cmd my_store -s set_condition 3
    statehub dripline cmd broadcast -s ping
    """
    positional, keywords = split_arguments(values)
    payload = {"values": positional, **keywords}
    _send(broker, config_path, "cmd", target, payload, specifier, lockout_key, timeout)
