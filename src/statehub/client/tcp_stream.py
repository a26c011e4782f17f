"""The client's end of the session protocol over plain TCP (``statehub.server.tcp_transport``).

Same shape as the other client frame streams (``write``, ``read``, ``abort``, ``close``):
each frame is a 4-byte big-endian length and the frame. Failures are ``ConnectionError``
with a message that says what happened. A server's last frame holding an error with no
request id (why it ends the session) is a frame like any other: the session reads it, as
on every transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from statehub.protocol.tcp_framing import (
    LENGTH_BYTES,
    MAX_SERVER_FRAME,
    encode_length,
    set_keepalive,
)

#: Seconds close() waits for the server to see the connection end.
_CLOSE_GRACE = 1.0


class TcpFrames:
    """One session's frames over one TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        keepalive_time: float = 10.0,
        keepalive_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> TcpFrames:
        """Connect (over TLS with ``ssl_context``, checking ``server_hostname`` or ``host``)."""
        try:
            reader, writer = await asyncio.open_connection(
                host,
                port,
                limit=1 << 20,
                ssl=ssl_context,
                server_hostname=(server_hostname or host) if ssl_context is not None else None,
            )
        except OSError as error:
            raise ConnectionError(
                f"cannot connect to {host}:{port} over TCP: {error.strerror or error}"
            ) from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            set_keepalive(sock, keepalive_time, keepalive_timeout)
        return cls(reader, writer)

    async def write(self, frame: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionError("the TCP connection is closed")
        self._writer.write(encode_length(frame) + frame)
        await self._writer.drain()

    async def read(self) -> bytes | None:
        """The next frame; None once the server has ended the stream."""
        try:
            header = await self._reader.readexactly(LENGTH_BYTES)
        except asyncio.IncompleteReadError as error:
            if error.partial:
                raise ConnectionError("the server closed the connection inside a frame") from None
            return None
        length = int.from_bytes(header, "big")
        if length > MAX_SERVER_FRAME:
            raise ConnectionError(f"the server sent a frame length of {length} bytes")
        try:
            frame = await self._reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise ConnectionError("the server closed the connection inside a frame") from None
        return frame

    def abort(self) -> None:
        """Drop the connection now (an RST to the server, nothing more is read)."""
        self._writer.transport.abort()

    async def close(self) -> None:
        """Close the connection and wait (briefly) until it is gone."""
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), _CLOSE_GRACE)

    async def finish(self) -> None:
        """Half-close: the server writes what it still has, then ends the stream."""
        if self._writer.can_write_eof():
            self._writer.write_eof()
        await self._writer.drain()
