"""Options shared by the commands that talk to a server."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from statehub.client.address import is_ipv6_address, resolve_target
from statehub.client.tls import ClientTls

F = TypeVar("F", bound=Callable[..., Any])


#: Where the security options keep their values in the click context (not as arguments,
#: so each command's signature stays host and port).
_SECURITY = "statehub.security"


def _remember(context: click.Context, parameter: click.Parameter, value: Any) -> None:
    context.meta.setdefault(_SECURITY, {})[parameter.name] = value


def security_options(function: F) -> F:
    """Add ``--credential`` and ``--tls-ca/--tls-cert/--tls-key`` (also from the environment)."""
    for name, envvar, text in (
        ("--tls-key", "STATEHUB_TLS_KEY", "This client's private key (PEM), for mutual TLS."),
        ("--tls-cert", "STATEHUB_TLS_CERT", "This client's certificate (PEM), for mutual TLS."),
        (
            "--tls-ca",
            "STATEHUB_TLS_CA",
            "CA bundle (PEM) the server's certificate must chain to; turns TLS on "
            "(as does a --host of the form statehubs://host:port or wss://host:port).",
        ),
        (
            "--credential",
            "STATEHUB_CREDENTIAL",
            "Bearer token (or JWT) for a server started with --auth.",
        ),
    ):
        function = click.option(
            name,
            envvar=envvar,
            default=None,
            expose_value=False,
            callback=_remember,
            help=text,
        )(function)
    return function


def client_security() -> dict[str, Any]:
    """``credential`` and ``tls`` for the client, from the current command's options."""
    given = click.get_current_context().meta.get(_SECURITY, {})
    ca, cert, key = given.get("tls_ca"), given.get("tls_cert"), given.get("tls_key")
    tls = None
    if ca is not None or cert is not None or key is not None:
        try:
            tls = ClientTls(ca_file=ca, cert_file=cert, key_file=key)
        except ValueError as error:
            raise click.UsageError(f"--tls-cert/--tls-key: {error}") from None
    return {"credential": given.get("credential"), "tls": tls}


def server_options(function: F) -> F:
    """Add ``--host/-h`` and ``--port/-p`` (the server to talk to), read with the environment,
    and the security options.

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

    decorated = security_options(resolved)
    decorated = click.option(
        "--port",
        "-p",
        type=click.IntRange(0, 65535),
        default=None,
        help="Server port [default: from --host's URL, STATEHUB_URL or STATEHUB_PORT, else 38802].",
    )(decorated)
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
