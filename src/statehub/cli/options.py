"""Options shared by the commands that talk to a server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from statehub.client.connection import DEFAULT_PORT
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
            "(as does a --host of the form statehubs://host:port).",
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
    """Add ``--host`` and ``--port`` (the server to talk to), and the security options."""
    function = security_options(function)
    function = click.option(
        "--port",
        type=click.IntRange(0, 65535),
        default=DEFAULT_PORT,
        show_default=True,
        help="Server port.",
    )(function)
    function = click.option(
        "--host", default="localhost", show_default=True, help="Server address."
    )(function)
    return function
