"""Which web pages may open the web port's WebSockets: the ``Origin`` check.

A browser lets any page open a WebSocket to any host, and sends the cookies and the
client certificate it has for that host; the only thing that tells the server which page
opened it is the ``Origin`` header, which the page cannot forge. Without a check, any page
an operator opens could read and write the state through ``ws://127.0.0.1:38801``
(cross-site WebSocket hijacking). So every upgrade that carries an ``Origin`` must come
from the server's own origin (the scheme of the connection and the ``Host`` the browser
asked for: the dashboard's own page) or from an origin the operator allowed
(``statehub serve --allow-origin``). A request without ``Origin`` is not from a page
(Python clients, NanoVer's clients, curl): it is not checked, and the session's identity
rules apply to it as to every other transport.

Origins are compared in one normal form, ``scheme://host[:port]``: scheme and host in
lower case, IPv6 hosts in brackets, the scheme's default port left out.
"""

from __future__ import annotations

from collections.abc import Iterable

from yarl import URL

#: In the allow-list: every origin may open the WebSockets (the check is off).
ANY_ORIGIN = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normal_origin(text: str) -> str | None:
    """``text`` as ``scheme://host[:port]``, or None if it is not such an origin (such as
    the ``null`` a sandboxed frame or a ``file://`` page sends, or a URL with a path)."""
    try:
        url = URL(text.strip())
    except ValueError:
        return None
    if not url.is_absolute() or not url.scheme or not url.host:
        return None
    if url.path not in ("", "/") or url.query_string or url.fragment or url.user is not None:
        return None
    scheme = url.scheme.lower()
    host = url.host.lower()
    if ":" in host:
        host = f"[{host}]"
    port = url.explicit_port
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class OriginPolicy:
    """The origins allowed next to the server's own; ``*`` allows every origin."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.any = False
        self.allowed: frozenset[str] = frozenset()
        origins = set()
        for entry in allowed:
            if not isinstance(entry, str):
                raise ValueError(f"an allowed origin must be a string, got {entry!r}")
            if entry.strip() == ANY_ORIGIN:
                self.any = True
                continue
            origin = normal_origin(entry)
            if origin is None:
                raise ValueError(
                    f"allowed origin {entry!r} is not an origin: expected scheme://host[:port] "
                    "(such as https://lab.example.org:8443), with no path, or '*' for any"
                )
            origins.add(origin)
        self.allowed = frozenset(origins)

    def refusal(self, origin: str | None, scheme: str, host: str) -> str | None:
        """Why a WebSocket upgrade from ``origin`` to ``scheme://host`` (the request's own
        scheme and ``Host`` header) is refused, or None if it may go ahead."""
        if origin is None or self.any:
            return None
        own = normal_origin(f"{scheme}://{host}") if host else None
        normal = normal_origin(origin)
        if normal is not None and (normal == own or normal in self.allowed):
            return None
        allowed = ", ".join(sorted(self.allowed)) or "none"
        return (
            f"WebSocket from origin {origin!r} refused: a page may open this server's "
            f"WebSockets only from the server's own origin ({own or 'unknown'}) or an origin "
            f"allowed with --allow-origin (allowed: {allowed})"
        )
