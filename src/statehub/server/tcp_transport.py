"""The session protocol over a plain TCP connection: a prototype of a cheaper transport.

Each frame travels as a 4-byte big-endian length followed by the frame itself, one
session per connection; ``serve_session`` owns the session's whole life, as with gRPC.
A connection-level error (a malformed frame, a length over the limit) is sent as one
last frame ``[{"id": None, "error": {...}}]`` before the server closes the connection,
so the client learns what was wrong (gRPC would carry it in the call's status).

A dead peer is noticed by the kernel: TCP keepalive probes an idle connection, and
TCP_USER_TIMEOUT drops one whose sent data stays unacknowledged; the client's own
application ``ping`` (sent when the server has been silent for ``keepalive_s``) covers
the other direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

from statehub.protocol import encode_batch
from statehub.protocol.errors import MessageTooLargeError, ProtocolError, error_to_wire
from statehub.protocol.tcp_framing import LENGTH_BYTES, encode_length, set_keepalive
from statehub.server.peer import Peer
from statehub.server.session import Hub
from statehub.server.transport import serve_session
from statehub.web.edge import certificate_names

logger = logging.getLogger(__name__)

#: Seconds the server waits for a last error frame to be written before dropping a peer.
_CLOSE_GRACE = 2.0

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame_limit(max_message_bytes: int) -> int:
    """Longest frame read at all: as gRPC's hard limit in ``StateServer.start``.

    A frame between ``max_message_bytes`` and this is read and answered request by
    request (MessageTooLargeError) by the session; a longer one is refused unread.
    """
    return max(2 * max_message_bytes, max_message_bytes + 1024 * 1024)


class TcpFrames:
    """A TCP connection as a ``FrameStream``; a refused frame length ends the reading."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_frame = max_frame
        #: Why reading stopped early, to be told to the client once the session is over.
        self.refused: MessageTooLargeError | None = None

    async def read(self) -> bytes | None:
        try:
            header = await self._reader.readexactly(LENGTH_BYTES)
        except asyncio.IncompleteReadError as error:
            if error.partial:
                raise ProtocolError(
                    f"the connection ended inside a frame's {LENGTH_BYTES}-byte length"
                ) from None
            return None  # the client finished sending
        length = int.from_bytes(header, "big")
        if length > self._max_frame:
            self.refused = MessageTooLargeError(
                f"a frame of {length} bytes is over the limit of {self._max_frame} bytes "
                "(the TCP transport's frame limit, from max_message_bytes); "
                "the connection is closed"
            )
            return None
        try:
            return await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as error:
            raise ProtocolError(
                f"the connection ended inside a frame: {len(error.partial)} of its "
                f"{length} bytes arrived"
            ) from None

    async def write(self, frame: bytes) -> None:
        self._writer.write(encode_length(frame) + frame)
        await self._writer.drain()


def tcp_session_handler(
    hub: Hub, *, keepalive_time: float | None = None, keepalive_timeout: float = 5.0
) -> ConnectionHandler:
    """The ``asyncio.start_server`` callback serving ``hub``'s sessions, one per connection.

    ``keepalive_time`` defaults to the hub's (what ``hello`` tells clients).
    """
    max_frame = frame_limit(hub.max_message_bytes)
    idle = hub.keepalive_s if keepalive_time is None else keepalive_time

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            set_keepalive(sock, idle, keepalive_timeout)
        frames = TcpFrames(reader, writer, max_frame)
        peer = Peer(
            address=_address(writer),
            transport="tcp",
            certificate_identities=certificate_names(writer.get_extra_info("peercert")),
        )
        error: Exception | None = None
        try:
            await serve_session(hub, frames, peer)
            error = frames.refused
        except ProtocolError as malformed:
            error = malformed
        except (ConnectionError, OSError) as broken:  # the peer went away mid-write
            logger.debug("tcp session from %s: connection lost: %r", peer.address, broken)
        finally:
            await _close(writer, error)

    return handle


async def start_tcp_server(
    hub: Hub,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    keepalive_time: float | None = None,
    keepalive_timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """Listen for session-protocol connections on ``host:port`` (0: a free port).

    With ``ssl_context``, each connection is TLS first (the server's ``ServerTls``).
    """
    handler = tcp_session_handler(
        hub, keepalive_time=keepalive_time, keepalive_timeout=keepalive_timeout
    )
    return await asyncio.start_server(handler, host, port, ssl=ssl_context)


async def _close(writer: asyncio.StreamWriter, error: Exception | None) -> None:
    """Tell the client ``error`` (if any) in a last frame, then close the connection."""
    with contextlib.suppress(Exception):
        if error is not None and not writer.is_closing():
            frame = encode_batch([{"id": None, "error": error_to_wire(error)}])
            writer.write(encode_length(frame) + frame)
            await asyncio.wait_for(writer.drain(), _CLOSE_GRACE)
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_GRACE)


def _address(writer: asyncio.StreamWriter) -> str:
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"tcp:{peername[0]}:{peername[1]}"
    return "tcp:unknown"
