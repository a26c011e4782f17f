"""Moves frames between a WebSocket and a session; nothing else.

One binary WebSocket message is one frame of the session protocol (``docs/protocol.md``),
exactly as one gRPC message is over gRPC; ``serve_session`` owns the session's whole life.
``send_bytes`` waits while the socket's write buffer is full, so a client that does not
read slows its own session down, as over gRPC; one whose socket takes no bytes for
``unread_timeout`` seconds is dropped (the session closes, releasing its leases and locks).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from statehub.errors import ProtocolError
from statehub.server.peer import Peer
from statehub.server.session import Hub
from statehub.server.transport import serve_session

logger = logging.getLogger(__name__)

#: WebSocket close reasons are limited to 123 bytes.
_MAX_CLOSE_REASON = 120


class _WebSocketFrames:
    """A server-side WebSocket as a ``FrameStream``."""

    def __init__(
        self,
        socket: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        unread_timeout: float,
    ) -> None:
        self._socket = socket
        self._transport = transport
        self._unread_timeout = unread_timeout

    async def read(self) -> bytes | None:
        message = await self._socket.receive()
        if message.type is WSMsgType.BINARY:
            # aiohttp hands over buffered messages without yielding; let the tasks the
            # last frame started (a lock joining its queue) run before the next frame,
            # as they do between two gRPC reads.
            await asyncio.sleep(0)
            return message.data  # type: ignore[no-any-return]
        if message.type is WSMsgType.TEXT:
            raise ProtocolError(
                "the session protocol takes binary WebSocket messages (msgpack), got a text message"
            )
        return None  # closed, closing, or broken: the client is done sending

    async def write(self, frame: bytes) -> None:
        try:
            async with asyncio.timeout(self._unread_timeout):
                await self._socket.send_bytes(frame)
        except TimeoutError:
            # A close frame would wait behind what it does not read: abort the connection.
            logger.info(
                "WebSocket session client read nothing for %s s: dropped", self._unread_timeout
            )
            if self._transport is not None:
                self._transport.abort()
            raise ConnectionResetError("the client read nothing within the bound") from None


async def serve_session_socket(
    hub: Hub,
    socket: web.WebSocketResponse,
    peer: Peer,
    *,
    transport: asyncio.Transport | None = None,
    unread_timeout: float = 15.0,
) -> None:
    """Run one session over ``socket`` until either side ends it; then close the socket."""
    try:
        await serve_session(hub, _WebSocketFrames(socket, transport, unread_timeout), peer)
    except ProtocolError as error:
        reason = str(error).encode()[:_MAX_CLOSE_REASON]
        await socket.close(code=WSCloseCode.PROTOCOL_ERROR, message=reason)
    except ConnectionResetError:
        pass  # the client went away while being written to
    finally:
        await socket.close()
