"""The session protocol over a plain TCP connection: the default transport.

Each frame travels as a 4-byte big-endian length followed by the frame itself, one
session per connection; ``serve_session`` owns the session's whole life, as with gRPC.
A connection-level error (a malformed frame, a length over the limit, a client that
stopped answering) is the session's last message, ``[{"id": None, "error": {...}}]``,
written like any frame before the connection is closed (``Session.fail``).

A dead peer is noticed by the kernel: TCP keepalive probes an idle connection, and
TCP_USER_TIMEOUT drops one whose sent data stays unacknowledged. A frozen client (its
kernel still answers for it) is noticed by the session's heartbeat (``heartbeat.py``):
pinged after ``keepalive`` s of silence, dropped when nothing comes back within the
keepalive timeout. The client's own ``ping`` (sent when the server has been silent for
``keepalive_s``) covers the other direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from statehub.errors import MessageTooLargeError, ProtocolError
from statehub.protocol import encode_batch
from statehub.protocol.errors import error_to_wire
from statehub.protocol.tcp_framing import LENGTH_BYTES, encode_length, set_keepalive
from statehub.server.connections import HANDSHAKE_TIMEOUT, HandshakeDeadlines
from statehub.server.limits import LimitExceededError
from statehub.server.peer import Peer
from statehub.server.session import Hub
from statehub.server.tls import certificate_names
from statehub.server.transport import serve_session

logger = logging.getLogger(__name__)

#: Seconds the server waits for its last frames to be taken before cutting a peer off.
_CLOSE_GRACE = 2.0


def frame_limit(max_message_bytes: int) -> int:
    """Longest frame read at all: as gRPC's hard limit in ``StateServer.start``.

    A frame between ``max_message_bytes`` and this is read and answered request by
    request (MessageTooLargeError) by the session; a longer one is refused unread.
    """
    return max(2 * max_message_bytes, max_message_bytes + 1024 * 1024)


#: Bytes read ahead of the session (beyond a frame still arriving) before the socket stops
#: being read, as asyncio's StreamReader does (2 x 64 KiB): a client that sends requests
#: without reading the replies is then held back by TCP itself.
_READ_AHEAD = 128 * 1024


class TcpFrames(asyncio.Protocol):
    """One TCP connection as a ``FrameStream``: frames are cut from the bytes as they arrive.

    An asyncio protocol rather than the StreamReader/StreamWriter pair: an idle connection
    then holds this object and its transport, not a reader, a writer, a stream protocol
    and their buffers (about 2 KiB per subscriber, see docs/fanout.md). The connection's
    one task serves its session (``serve_session``). A refused frame length ends the
    reading with ``MessageTooLargeError``, which the session fails with.
    """

    __slots__ = (
        "_buffer",
        "_counted",
        "_dropping",
        "_eof",
        "_error",
        "_gone",
        "_handshakes",
        "_hub",
        "_keepalive",
        "_max_frame",
        "_paused_reading",
        "_paused_writing",
        "_reading",
        "_task",
        "_transport",
        "_writing",
    )

    def __init__(
        self,
        hub: Hub,
        max_frame: int,
        keepalive: tuple[float, float],
        handshakes: HandshakeDeadlines,
    ) -> None:
        self._hub = hub
        self._max_frame = max_frame
        self._keepalive = keepalive  # (idle seconds, probe timeout), shared by the listener
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._buffer = bytearray()
        self._eof = False  # no more bytes will arrive
        self._gone = False  # the connection is closed
        self._dropping = False  # closing: what still arrives is read and dropped
        self._error: BaseException | None = None  # why, if it broke
        self._paused_reading = False
        self._paused_writing = False
        # Futures only while a read or a write waits: none for an idle connection's writer.
        self._reading: asyncio.Future[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self._counted = False  # holds one of the hub's connection budget
        #: The port's connections waiting for their first whole frame (within
        #: HANDSHAKE_TIMEOUT), while this one is among them.
        self._handshakes: HandshakeDeadlines | None = handshakes

    # -- the FrameStream the session sees ------------------------------------------------

    async def read(self) -> bytes | None:
        while True:
            buffer = self._buffer
            if len(buffer) >= LENGTH_BYTES:
                length = int.from_bytes(buffer[:LENGTH_BYTES], "big")
                if length > self._max_frame:
                    raise MessageTooLargeError(
                        f"a frame of {length} bytes is over the limit of {self._max_frame} "
                        "bytes (the TCP transport's frame limit, from max_message_bytes); "
                        "the connection is closed"
                    )
                end = LENGTH_BYTES + length
                if len(buffer) >= end:
                    if self._handshakes is not None:
                        self._handshakes.done(self)
                        self._handshakes = None
                    frame = bytes(buffer[LENGTH_BYTES:end])
                    del buffer[:end]
                    if self._paused_reading and self._wants_bytes():
                        self._paused_reading = False
                        self._require_transport().resume_reading()
                    return frame
            if self._eof:
                if self._error is not None:
                    raise self._error
                if not buffer:
                    return None  # the client finished sending
                if len(buffer) < LENGTH_BYTES:
                    raise ProtocolError(
                        f"the connection ended inside a frame's {LENGTH_BYTES}-byte length"
                    )
                raise ProtocolError(
                    f"the connection ended inside a frame: {len(buffer) - LENGTH_BYTES} of "
                    f"its {length} bytes arrived"
                )
            self._reading = asyncio.get_running_loop().create_future()
            try:
                await self._reading
            finally:
                self._reading = None

    async def write(self, frame: bytes) -> None:
        if self._gone:
            raise ConnectionResetError("the connection is closed")
        self._require_transport().write(encode_length(frame) + frame)
        await self._until(lambda: not self._paused_writing)
        if self._gone:
            raise ConnectionResetError("the connection was lost while writing")

    async def close(self) -> None:
        """Close the connection once what was written has gone out; a peer that takes
        none of it within the grace (a frozen client) is cut off.

        With bytes still unread (a client sending the frame that was refused), the close
        lingers, as HTTP servers' does: the last frame and a FIN go out, and what the peer
        still sends is read and dropped until it closes too. Closing with bytes unread
        would send a reset, and a reset can destroy the last frame before the peer reads it.
        """
        transport = self._require_transport()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_GRACE):
                if (self._buffer or self._paused_reading) and transport.can_write_eof():
                    self._drop_what_comes()
                    transport.write_eof()
                    await self._until(lambda: self._eof)
                transport.close()
                await self._until(lambda: self._gone)
        if not self._gone:
            transport.abort()

    def _drop_what_comes(self) -> None:
        self._dropping = True
        self._buffer.clear()
        if self._paused_reading and not self._gone:
            self._paused_reading = False
            self._require_transport().resume_reading()

    # -- asyncio's side ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._hub.connections.take("TCP"):
            budget = self._hub.connections
            refusal = LimitExceededError(
                f"the server has {budget.open} connections open, its limit "
                f"({budget.limit}); try again later"
            )
            frame = encode_batch([{"id": None, "error": error_to_wire(refusal)}])
            transport.write(encode_length(frame) + frame)
            transport.close()
            return
        self._counted = True
        assert self._handshakes is not None, "a new connection waits for its first frame"
        self._handshakes.start(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            set_keepalive(sock, *self._keepalive)
        peer = Peer(
            address=_address(transport),
            transport="tcp",
            certificate_identities=certificate_names(transport.get_extra_info("peercert")),
        )
        self._task = asyncio.get_running_loop().create_task(
            _serve(self._hub, self, peer, self._keepalive)
        )

    def data_received(self, data: bytes) -> None:
        if self._dropping:
            return
        self._buffer += data
        _wake(self._reading)
        if not self._paused_reading and not self._wants_bytes():
            self._paused_reading = True
            self._require_transport().pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        _wake(self._reading)
        _wake(self._writing)  # a lingering close waits for it
        # Keep the socket open to write the replies still due (TLS cannot half-close).
        return self._require_transport().get_extra_info("sslcontext") is None

    def handshake_expired(self) -> None:
        self._handshakes = None
        logger.debug("tcp connection: no frame within %s s: closed", HANDSHAKE_TIMEOUT)
        self._require_transport().abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._hub.connections.give_back()
        if self._handshakes is not None:
            self._handshakes.done(self)
            self._handshakes = None
        self._eof = self._gone = True
        if exc is not None:
            self._error = exc
        _wake(self._reading)
        _wake(self._writing)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        _wake(self._writing)

    # -- helpers -------------------------------------------------------------------------

    def _wants_bytes(self) -> bool:
        """Keep reading: little is buffered, or the first frame is still arriving."""
        buffer = self._buffer
        if len(buffer) < _READ_AHEAD:
            return True
        length = int.from_bytes(buffer[:LENGTH_BYTES], "big")
        return length <= self._max_frame and len(buffer) < LENGTH_BYTES + length

    async def _until(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()`` or the connection is gone (woken by the writing side, the
        peer's EOF and the loss)."""
        while not (done() or self._gone):
            self._writing = asyncio.get_running_loop().create_future()
            try:
                await self._writing
            finally:
                self._writing = None

    def _require_transport(self) -> asyncio.Transport:
        assert self._transport is not None, "used before the connection was made"
        return self._transport


async def _serve(hub: Hub, frames: TcpFrames, peer: Peer, heartbeat: tuple[float, float]) -> None:
    """The connection's task: its session (whose last message says why, if it failed),
    then the close."""
    try:
        await serve_session(hub, frames, peer, heartbeat=heartbeat)
    except (ConnectionError, OSError) as broken:  # the peer went away mid-write
        logger.debug("tcp session from %s: connection lost: %r", peer.address, broken)
    finally:
        await frames.close()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


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

    ``keepalive_time`` defaults to the hub's (what ``hello`` tells clients). With
    ``ssl_context``, each connection is TLS first (the server's ``ServerTls``).
    """
    max_frame = frame_limit(hub.max_message_bytes)
    keepalive = (hub.keepalive_s if keepalive_time is None else keepalive_time, keepalive_timeout)
    handshakes = HandshakeDeadlines()
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: TcpFrames(hub, max_frame, keepalive, handshakes), host, port, ssl=ssl_context
    )


def _address(transport: asyncio.BaseTransport) -> str:
    peername = transport.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"tcp:{peername[0]}:{peername[1]}"
    return "tcp:unknown"
