"""Options shared by the commands that talk to a server."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from statehub.client.address import is_ipv6_address, resolve_target

F = TypeVar("F", bound=Callable[..., Any])


def server_options(function: F) -> F:
    """Add ``--host/-h`` and ``--port/-p`` (the server to talk to), read with the environment.

    The command receives ``host`` as the resolved server URL (``statehub://host:port``) and
    ``port`` as its port; a bad address (``--host host:port``, a bad ``STATEHUB_URL``...)
    is a usage error naming what was wrong.
    """

    @functools.wraps(function)
    def resolved(*args: Any, host: str | None, port: int | None, **kwargs: Any) -> Any:
        try:
            target = resolve_target(host, port)
        except ValueError as error:
            message = str(error).replace("address ", "--host ", 1)
            raise click.UsageError(message) from None
        return function(*args, host=str(target), port=target.port, **kwargs)

    decorated = click.option(
        "--port",
        "-p",
        type=click.IntRange(0, 65535),
        default=None,
        help="Server port [default: from --host's URL, STATEHUB_URL or STATEHUB_PORT, else 38801].",
    )(resolved)
    decorated = click.option(
        "--host",
        "-h",
        default=None,
        help="Server host, or URL statehub://host:port "
        "[default: STATEHUB_URL, else STATEHUB_HOST, else localhost].",
    )(decorated)
    return decorated  # type: ignore[return-value]


def listen_host(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Check ``serve --host``: an address to listen on, not ``host:port``."""
    host = value.strip("[]")
    if ":" in host and not is_ipv6_address(host):
        raise click.BadParameter(
            f"{value!r} looks like host:port; give the address alone and the port with --port/-p"
        )
    return value
