"""Where a client finds its server: ``statehub://host:port`` URLs and the environment.

An address is a host (``localhost``, ``10.0.0.5``, ``::1``) or a URL
(``statehub://host:port``); ``parse_target`` turns either into a ``Target``. With no
address, ``resolve_target`` reads ``STATEHUB_URL``, then ``STATEHUB_HOST`` and
``STATEHUB_PORT``, then falls back to ``localhost:38802``. A scheme says how to reach the
server: ``SCHEMES`` maps each known one to its default port, so other transports add
their scheme there and the rest of the parsing stays as it is.

The ports follow ``statehub serve``'s layout (``statehub.protocol.ports``): the web edge
on 38801, the session protocol over plain TCP on 38802, the default and fastest way in
(``statehub://``), and gRPC on 38803, reached only under its own scheme
(``statehub+grpc://``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from statehub.protocol.ports import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, DEFAULT_TCP_PORT

DEFAULT_HOST = "localhost"
#: What a client uses when told nothing: the plain-TCP transport.
DEFAULT_PORT = DEFAULT_TCP_PORT
DEFAULT_SCHEME = "statehub"
#: Known URL schemes and their default ports: plain TCP (plain, TLS; ``+tcp`` says it
#: outright), gRPC (plain, TLS), WebSocket (plain, TLS).
SCHEMES: dict[str, int] = {
    DEFAULT_SCHEME: DEFAULT_TCP_PORT,
    "statehubs": DEFAULT_TCP_PORT,
    "statehub+tcp": DEFAULT_TCP_PORT,
    "statehubs+tcp": DEFAULT_TCP_PORT,
    "statehub+grpc": DEFAULT_GRPC_PORT,
    "statehubs+grpc": DEFAULT_GRPC_PORT,
    "ws": DEFAULT_HTTP_PORT,
    "wss": DEFAULT_HTTP_PORT,
}
_TLS_SCHEMES = frozenset({"statehubs", "statehubs+tcp", "statehubs+grpc", "wss"})
_TCP_SCHEMES = frozenset({"statehub", "statehubs", "statehub+tcp", "statehubs+tcp"})
_GRPC_SCHEMES = frozenset({"statehub+grpc", "statehubs+grpc"})
#: The environment variables a client reads when it is given no address.
URL_VARIABLE = "STATEHUB_URL"
HOST_VARIABLE = "STATEHUB_HOST"
PORT_VARIABLE = "STATEHUB_PORT"


@dataclass(frozen=True, slots=True)
class Target:
    """A server to connect to: how (``scheme``), ``host`` and ``port``."""

    scheme: str
    host: str
    port: int

    @property
    def host_port(self) -> str:
        """``host:port``, with an IPv6 host in brackets (what gRPC dials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def tls(self) -> bool:
        """Whether the scheme asks for TLS (``statehubs://``, ``statehubs+grpc://``, ``wss://``)."""
        return self.scheme in _TLS_SCHEMES

    @property
    def transport(self) -> str:
        """How the frames travel: ``"tcp"``, ``"grpc"`` or ``"websocket"``."""
        if self.scheme in _TCP_SCHEMES:
            return "tcp"
        return "grpc" if self.scheme in _GRPC_SCHEMES else "websocket"

    @property
    def dial_address(self) -> str:
        """What the transport dials with the port: the TCP or WebSocket URL, or the host
        (an IPv6 host in brackets) for gRPC."""
        if self.transport == "grpc":
            return self.host_port.rpartition(":")[0]
        return str(self)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host_port}"


def parse_target(address: str, port: int | None = None, *, what: str = "address") -> Target:
    """The target ``address`` (a host or a URL) names; ``port`` overrides a host's default.

    ``ValueError`` names ``what`` (an option or variable) for an unknown scheme, a bad
    port, a host written as ``host:port``, or a URL whose port contradicts ``port``.
    """
    if type(address) is not str or not address.strip():
        raise ValueError(f"{what} must be a host or a statehub:// URL, got {address!r}")
    address = address.strip()
    if port is not None:
        _check_port(port, "port")
    if "://" not in address:
        host = address.strip("[]") if address.startswith("[") else address
        if ":" in host and not is_ipv6_address(host):
            maybe_port = host.rpartition(":")[2]
            raise ValueError(
                f"{what} {address!r} looks like host:port; give the host alone and the port "
                f"separately (port {maybe_port}), or write the URL {DEFAULT_SCHEME}://{address}"
                if maybe_port.isdigit()
                else f"{what} {address!r} is not a host name or address"
            )
        return Target(DEFAULT_SCHEME, host, port if port is not None else DEFAULT_PORT)
    parts = urlsplit(address)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{name}://" for name in sorted(SCHEMES))
        raise ValueError(f"{what} {address!r}: unknown scheme {scheme}:// (known: {known})")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{what} {address!r}: a URL here is {scheme}://host[:port], nothing more")
    try:
        url_port = parts.port
    except ValueError:
        raise ValueError(f"{what} {address!r}: the port must be a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{what} {address!r} names no host")
    if url_port is not None and port is not None and url_port != port:
        raise ValueError(f"{what} {address!r} says port {url_port}, but port {port} was given too")
    chosen = url_port if url_port is not None else port if port is not None else SCHEMES[scheme]
    return Target(scheme, parts.hostname, chosen)


def resolve_target(
    address: str | None = None,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Target:
    """The server a client should use: ``address``/``port`` given, else the environment.

    An ``address`` replaces the environment as a whole; a ``port`` alone takes the host
    from ``STATEHUB_URL`` or ``STATEHUB_HOST``. Without either, ``STATEHUB_URL`` wins
    over ``STATEHUB_HOST``/``STATEHUB_PORT``; with nothing set, ``localhost:38802``.
    """
    if address is not None:
        return parse_target(address, port)
    env = os.environ if environ is None else environ
    url = env.get(URL_VARIABLE, "").strip()
    if url:
        found = parse_target(url, what=URL_VARIABLE)
        if port is None:
            return found
        return Target(found.scheme, found.host, _check_port(port, "port"))
    host = env.get(HOST_VARIABLE, "").strip() or DEFAULT_HOST
    if port is None:
        text = env.get(PORT_VARIABLE, "").strip()
        port = _port_from_text(text, PORT_VARIABLE) if text else None
    return parse_target(host, port, what=HOST_VARIABLE)


def _port_from_text(text: str, what: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{what} must be a port number from 0 to 65535, got {text!r}")
    return _check_port(int(text), what)


def _check_port(port: object, what: str) -> int:
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"{what} must be an int from 0 to 65535, got {port!r}")
    return port


def is_ipv6_address(host: str) -> bool:
    """Whether ``host`` is an IPv6 address (``::1``, ``fe80::1%eth0``), not host:port."""
    if ":" not in host:
        return False  # every IPv6 address has one; `statehub get` need not load ipaddress
    import ipaddress

    try:
        return ipaddress.ip_address(host.split("%")[0]).version == 6
    except ValueError:
        return False


__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_PORT",
    "DEFAULT_TCP_PORT",
    "SCHEMES",
    "Target",
    "is_ipv6_address",
    "parse_target",
    "resolve_target",
]
