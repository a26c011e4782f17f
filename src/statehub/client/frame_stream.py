"""What every transport's stream is to ``Connection``: frames of bytes, and one error.

The transports (``grpc_frames``, ``websocket_frames``, ``tcp_frames``) build on this
module, and ``transports.open_frame_stream`` picks one of them, so these shared names live
apart from the chooser: otherwise each transport and the chooser would import each other.
"""

from __future__ import annotations

from typing import Protocol

#: Seconds close() waits for the transport to settle the closed stream.
CLOSE_GRACE = 1.0


class StreamBroken(Exception):
    """The stream failed; ``str()`` says why in words fit for ``ConnectionLostError``.

    ``error`` is the server's own error when the server said why it ended the stream (the
    plain-TCP transport's last frame, a gRPC status, a WebSocket close code), of the type
    the server raised, so the calls that were waiting fail with that type on every
    transport. None when the stream just broke.
    """

    def __init__(self, reason: str, error: Exception | None = None) -> None:
        super().__init__(reason)
        self.error = error


class FrameStream(Protocol):
    """A bidirectional stream of session-protocol frames."""

    async def write(self, frame: bytes) -> None:
        """Send one frame; writes that overlap go out one after another."""
        ...

    async def read(self) -> bytes | None:
        """The next frame; None once the server has ended the stream."""
        ...

    def abort(self) -> None:
        """Drop the stream now, without waiting (the session broke)."""

    async def close(self) -> None:
        """Drop the stream and wait (briefly) until the transport has let go of it."""
