"""The session's frames over one plain TCP connection (``statehub+tcp://``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from statehub.client.frame_stream import StreamBroken
from statehub.client.tcp_stream import TcpFrames
from statehub.client.tls import ClientTls


class TcpFrameStream:
    """Frames over one plain TCP connection (``statehub+tcp://host:port``), each one a
    4-byte big-endian length and the frame (``statehub.client.tcp_stream``)."""

    def __init__(self, frames: TcpFrames) -> None:
        self._frames = frames

    @classmethod
    async def open(cls, url: str, tls: ClientTls | None) -> TcpFrameStream:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise StreamBroken(f"{url} names no host and port")
        try:
            frames = await TcpFrames.open(
                parts.hostname,
                parts.port,
                ssl_context=tls.ssl_context() if tls is not None else None,
                server_hostname=tls.server_name if tls is not None else None,
            )
        except ConnectionError as error:
            raise StreamBroken(str(error)) from None
        return cls(frames)

    async def write(self, frame: bytes) -> None:
        try:
            await self._frames.write(frame)
        except (ConnectionError, OSError) as error:
            raise StreamBroken(f"writing failed: {type(error).__name__}: {error}") from None

    async def read(self) -> bytes | None:
        try:
            return await self._frames.read()
        except (ConnectionError, OSError) as error:
            raise StreamBroken(f"{type(error).__name__}: {error}") from None

    def abort(self) -> None:
        self._frames.abort()

    async def close(self) -> None:
        await self._frames.close()
