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

from statehub.errors import MessageTooLargeError, ProtocolError, StatehubError
from statehub.server.peer import Peer
from statehub.server.session import Hub
from statehub.server.transport import serve_session

logger = logging.getLogger(__name__)

#: The close code a failed session's socket ends with (the error, with its message, is
#: the session's last message); any other failure closes with POLICY_VIOLATION.
_CLOSE_CODES: dict[type[StatehubError], WSCloseCode] = {
    ProtocolError: WSCloseCode.PROTOCOL_ERROR,
    MessageTooLargeError: WSCloseCode.MESSAGE_TOO_BIG,
}


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
        # A session that fails has written its error as its last message: only close, with
        # the close code for its kind (as gRPC ends the call with its status).
        failure = await serve_session(
            hub, _WebSocketFrames(socket, transport, unread_timeout), peer
        )
        if failure is not None:
            code = _CLOSE_CODES.get(type(failure), WSCloseCode.POLICY_VIOLATION)
            await socket.close(code=code, message=type(failure).__name__.encode())
    except ConnectionResetError:
        pass  # the client went away while being written to
    finally:
        await socket.close()
