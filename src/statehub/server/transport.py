"""Running a session over any transport: the one place a session starts and ends.

A transport adapter (gRPC, WebSocket...) turns its connection into a ``FrameStream`` and
calls ``serve_session``. Whatever order the connection's events come in (the client
half-closes, cancels, vanishes, or the server stops) the session is closed exactly once,
synchronously, before anything else can be awaited: no path leaves leases, locks or
subscriptions behind.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from statehub.errors import ProtocolError
from statehub.server.peer import Peer
from statehub.server.session import Hub, Session

logger = logging.getLogger(__name__)


class FrameStream(Protocol):
    """One client connection, seen as frames of bytes."""

    async def read(self) -> bytes | None:
        """The next frame from the client; None once it has finished sending."""

    async def write(self, frame: bytes) -> None:
        """Send one frame to the client."""


async def serve_session(hub: Hub, stream: FrameStream, peer: Peer) -> None:
    """Serve one session over ``stream`` until either side ends it.

    Raises ``ProtocolError`` (after the session is closed and what it had to say is
    written) when the client sent a frame that cannot be decoded: the adapter ends the
    connection with its own status for that.
    """
    session = Session(hub, peer)
    reader = asyncio.ensure_future(_feed(stream, session))
    try:
        while (frame := await session.next_frame()) is not None:
            await stream.write(frame)
    finally:
        session.close()
        reader.cancel()
    if session.failure is not None:
        raise session.failure


async def _feed(stream: FrameStream, session: Session) -> None:
    """Hand every frame to the session; end the session when the client stops sending."""
    try:
        while (frame := await stream.read()) is not None:
            await session.receive(frame)
    except ProtocolError as error:
        session.fail(error)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # the connection broke while reading: nothing to answer
        logger.debug("session %s: reading ended: %r", session.id, error)
    finally:
        session.end()
