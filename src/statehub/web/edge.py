"""The web edge: one aiohttp application on its own port, in the gRPC server's event loop.

Routes (see ``docs/web.md``):

- ``/v1/session``: statehub's session protocol over WebSocket;
- ``/``: NanoVer's WebSocket protocol for a WebSocket upgrade, the dashboard otherwise;
- any other path: NanoVer's WebSocket protocol for a WebSocket upgrade (NanoVer's server
  accepts any path), 404 otherwise;
- ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (serving, store reachable).

Every WebSocket upgrade is checked for the page that asked for it (``origins.py``); under
``--auth``, ``/metrics`` and ``/readyz`` need the admin right ``metrics`` (``/healthz``
stays open for liveness probes).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from statehub.auth import Credentials, PermissionDeniedError, UnauthenticatedError
from statehub.server.connections import HANDSHAKE_TIMEOUT, ConnectionBudget
from statehub.server.peer import Peer
from statehub.server.session import Hub
from statehub.server.tls import certificate_names
from statehub.web import nanover_socket
from statehub.web.metrics import ServerMetrics
from statehub.web.nanover_socket import NanoverRoom, serve_nanover_socket
from statehub.web.origins import OriginPolicy
from statehub.web.session_socket import serve_session_socket

logger = logging.getLogger(__name__)

SESSION_WEBSOCKET_PATH = "/v1/session"
#: Where the built dashboard lives inside the package (built by ``make dashboard``).
DASHBOARD_DIR = Path(__file__).parent / "dashboard"


class WebEdge:
    """The HTTP/WebSocket side of a server: its routes, its listening socket."""

    def __init__(
        self,
        hub: Hub,
        *,
        keepalive_time: float,
        max_message_bytes: int,
        nanover_max_message_bytes: int | None = None,
        allow_origins: Iterable[str] = (),
    ) -> None:
        self.hub = hub
        #: Which pages may open the WebSockets: their own origin and these (``origins.py``).
        self.origins = OriginPolicy(allow_origins)
        #: aiohttp pings every ``keepalive_time`` s and drops a peer whose pong has not come
        #: within half of it: a dead peer is noticed within 1.5 x keepalive_time (15 s by
        #: default, the same bound as gRPC's 10 s + 5 s).
        self.keepalive_time = keepalive_time
        #: Frames up to twice the session limit are read and refused request by request
        #: (as over gRPC); beyond that the socket is closed with 1009 (message too big).
        self.max_frame_bytes = max(2 * max_message_bytes, max_message_bytes + 1024 * 1024)
        #: The largest message a NanoVer client may send; larger ones close with 1009.
        self.nanover_max_message_bytes = (
            nanover_socket.MAX_MESSAGE_BYTES
            if nanover_max_message_bytes is None
            else nanover_max_message_bytes
        )
        #: NanoVer's WebSocket clients (at ``/``) and the commands they registered.
        #: A WebSocket client whose socket takes no bytes for this long is dropped (its
        #: leases and locks released): the keepalive's bound, as TCP's user timeout.
        self.unread_timeout = 1.5 * keepalive_time
        self.nanover = NanoverRoom(
            hub,
            max_message_bytes=self.nanover_max_message_bytes,
            unread_timeout=self.unread_timeout,
        )
        self.metrics = ServerMetrics(hub, self.nanover)
        hub.observer = self.metrics
        self.nanover.observer = self.metrics
        self.app = web.Application(middlewares=[self._request_arrived])
        self.app.add_routes(
            [
                web.get("/", self._root),
                web.get(SESSION_WEBSOCKET_PATH, self._session),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/favicon.ico", self._favicon),
            ]
        )
        if DASHBOARD_DIR.is_dir():
            self.app.router.add_static("/dashboard/", DASHBOARD_DIR)
        # NanoVer's server routes on no path: its clients may open any (after every
        # other route, so /v1/session, /metrics, the dashboard... keep theirs).
        self.app.router.add_get("/{path:.*}", self._any_path)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        #: Connections still to send their first request head, by transport: their timer.
        self._handshakes: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}
        self._lag_probe: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(
        self, address: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Listen on ``address:port`` (0 picks a port; TLS with ``ssl_context``); returns
        the port bound."""
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=HTTP_KEEPALIVE_TIMEOUT,
        )
        await runner.setup()
        factory = runner.server
        assert factory is not None
        budget = self.hub.connections
        loop = asyncio.get_running_loop()
        try:
            # Not aiohttp's TCPSite: each connection is counted against the budget and
            # must send a whole request head within HANDSHAKE_TIMEOUT (aiohttp has no
            # such timeout: 900 half-sent requests stayed open).
            self._listener = await loop.create_server(
                lambda: _CountedConnection(factory, budget, self._handshakes),
                address,
                port,
                ssl=ssl_context,
            )
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._lag_probe = asyncio.ensure_future(self.metrics.probe_loop_lag())
        self.port = int(self._listener.sockets[0].getsockname()[1])
        logger.info("statehub web edge on http://%s:%d", address, self.port)
        return self.port

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        await self.nanover.close_all()
        if self._lag_probe is not None:
            self._lag_probe.cancel()
            await asyncio.wait([self._lag_probe])
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _request_arrived(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A whole request head came: its connection's handshake timer stops."""
        timer = self._handshakes.pop(request.transport, None) if request.transport else None
        if timer is not None:
            timer.cancel()
        response: web.StreamResponse = await handler(request)
        return response

    def websocket(self, max_frame_bytes: int, *, compress: bool = True) -> web.WebSocketResponse:
        return web.WebSocketResponse(
            heartbeat=self.keepalive_time, max_msg_size=max_frame_bytes, compress=compress
        )

    async def _session(self, request: web.Request) -> web.StreamResponse:
        socket = self.websocket(self.max_frame_bytes)
        if not socket.can_prepare(request).ok:
            raise web.HTTPBadRequest(
                text=f"{SESSION_WEBSOCKET_PATH} speaks the session protocol over WebSocket "
                "only: open it with a WebSocket upgrade"
            )
        self._check_origin(request)
        await socket.prepare(request)
        await serve_session_socket(
            self.hub,
            socket,
            peer=peer_of(request),
            transport=request.transport,
            unread_timeout=self.unread_timeout,
        )
        return socket

    async def _root(self, request: web.Request) -> web.StreamResponse:
        """NanoVer's protocol for a WebSocket upgrade (as NanoVer serves it); else the page."""
        served = await self._serve_nanover(request)
        return served if served is not None else self._dashboard_page()

    async def _any_path(self, request: web.Request) -> web.StreamResponse:
        """NanoVer's protocol for a WebSocket upgrade on any other path; else 404."""
        served = await self._serve_nanover(request)
        if served is None:
            raise web.HTTPNotFound()
        return served

    async def _serve_nanover(self, request: web.Request) -> web.StreamResponse | None:
        """Serve a NanoVer client if ``request`` is a WebSocket upgrade (None if not)."""
        # permessage-deflate declined (clients that offer it, as NanoVer's Python client
        # does, work without it): it would compress each shared delta once per client, which
        # cut a 100-avatar room from 29.6 to 7.6 updates/s per client (docs/web.md).
        socket = self.websocket(self.nanover_max_message_bytes, compress=False)
        if not socket.can_prepare(request).ok:
            return None
        self._check_origin(request)
        await socket.prepare(request)
        await serve_nanover_socket(self.nanover, socket, peer_of(request), request.transport)
        return socket

    def _check_origin(self, request: web.Request) -> None:
        """Refuse (403, naming the origin) an upgrade a page on a foreign origin asked for."""
        refusal = self.origins.refusal(
            request.headers.get("Origin"), request.scheme, request.headers.get("Host", "")
        )
        if refusal is not None:
            logger.debug("%s from %s: %s", request.path, peer_of(request).address, refusal)
            raise web.HTTPForbidden(text=refusal)

    def _dashboard_page(self) -> web.StreamResponse:
        index = DASHBOARD_DIR / "index.html"
        if not index.is_file():
            return web.Response(
                status=503,
                text="the dashboard is not built in this installation (run `make dashboard`); "
                "/v1/session, /metrics, /healthz and NanoVer's WebSocket at / still work",
            )
        return web.FileResponse(index)

    async def _favicon(self, request: web.Request) -> web.StreamResponse:
        """Browsers ask for /favicon.ico on their own: answer it, so a page load logs no 404."""
        icon = DASHBOARD_DIR / "favicon.svg"
        if not icon.is_file():
            return web.Response(status=204)
        return web.FileResponse(icon, headers={"Content-Type": "image/svg+xml"})

    def _check_monitoring(self, request: web.Request) -> None:
        """``/metrics`` and ``/readyz`` under ``--auth``: 401 without an identity that the
        server knows, 403 for one without the admin right ``metrics`` (``Hub``'s rule)."""
        peer = peer_of(request)
        try:
            self.hub.monitoring_identity(
                Credentials(peer.bearer_token, peer.certificate_identities), request.path
            )
        except UnauthenticatedError as error:
            raise web.HTTPUnauthorized(
                text=f"{request.path}: {error}", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        except PermissionDeniedError as error:
            raise web.HTTPForbidden(text=f"{request.path}: {error}") from None

    async def _metrics(self, request: web.Request) -> web.Response:
        self._check_monitoring(request)
        exposition = self.metrics.exposition()
        return web.Response(body=exposition, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        self._check_monitoring(request)
        try:
            revision = self.hub.state.revision
            frozen = self.hub.state.views.frozen
        except Exception as error:  # a store that cannot answer is not ready
            return web.json_response(
                {"status": "store unreachable", "error": str(error)}, status=503
            )
        if frozen:
            return web.json_response({"status": "stopping"}, status=503)
        return web.json_response({"status": "ready", "revision": revision})


#: Seconds an idle keep-alive HTTP connection stays open after a response (aiohttp's
#: default is 3,630 s).
HTTP_KEEPALIVE_TIMEOUT = 15.0

_REFUSAL_BODY = b"too many connections open on this server; try again later\n"
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nRetry-After: 1\r\nContent-Length: "
    + str(len(_REFUSAL_BODY)).encode()
    + b"\r\n\r\n"
    + _REFUSAL_BODY
)


class _CountedConnection(asyncio.Protocol):
    """One web-port connection: counted against the budget, refused with a 503 over it,
    closed if no whole request head came within ``HANDSHAKE_TIMEOUT``; otherwise
    aiohttp's own handler, to which every event is passed on."""

    def __init__(
        self,
        factory: Any,
        budget: ConnectionBudget,
        handshakes: dict[asyncio.BaseTransport, asyncio.TimerHandle],
    ) -> None:
        self._factory = factory
        self._budget = budget
        self._handshakes = handshakes
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._budget.take("web"):
            transport.write(_REFUSAL)
            transport.close()
            return
        self._transport = transport
        self._handshakes[transport] = asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT, self._handshake_expired
        )
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def _handshake_expired(self) -> None:
        transport = self._transport
        if transport is not None and transport in self._handshakes:
            del self._handshakes[transport]
            logger.debug("web connection: no request within %s s: closed", HANDSHAKE_TIMEOUT)
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        if self._transport is not None:
            timer = self._handshakes.pop(self._transport, None)
            if timer is not None:
                timer.cancel()
        self._budget.give_back()
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)


def peer_of(request: web.Request) -> Peer:
    """The client of ``request``: its address, a bearer token if it sent one, and the
    names of its TLS client certificate if it showed one."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport else None
    address = f"{peername[0]}:{peername[1]}" if peername else "unknown"
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    certificate = transport.get_extra_info("peercert") if transport else None
    return Peer(
        address=address,
        transport="websocket",
        bearer_token=bearer,
        certificate_identities=certificate_names(certificate),
    )
