"""Running a session over any transport: the one place a session starts and ends.

A transport adapter (gRPC, WebSocket, plain TCP) turns its connection into a
``FrameStream`` and calls ``serve_session``. Whatever order the connection's events come
in (the client half-closes, cancels, vanishes, or the server stops) the session is closed
exactly once, synchronously, before anything else can be awaited: no path leaves leases,
locks or subscriptions behind.

A connection fails one way on every transport: the session queues the error as its last
message (``Session.fail``: an undecodable frame, a refused frame, a silent client), the
adapter writes it like any other frame and then only closes its connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from statehub.errors import StatehubError
from statehub.server.heartbeat import Heartbeat
from statehub.server.peer import Peer
from statehub.server.session import Hub, Session

logger = logging.getLogger(__name__)

#: Seconds each of a failed session's last frames may take to be written: a client that
#: does not read them (a frozen one; over gRPC, one that reads no message) is not waited
#: for, and the adapter closes (gRPC with the error's status).
FAILED_WRITE_GRACE = 2.0


class FrameStream(Protocol):
    """One client connection, seen as frames of bytes."""

    async def read(self) -> bytes | None:
        """The next frame from the client; None once it has finished sending.

        May raise a ``StatehubError`` (a frame length over the limit): the session then
        fails with it."""

    async def write(self, frame: bytes) -> None:
        """Send one frame to the client."""


async def serve_session(
    hub: Hub,
    stream: FrameStream,
    peer: Peer,
    *,
    heartbeat: tuple[float, float] | None = None,
) -> StatehubError | None:
    """Serve one session over ``stream`` until either side ends it.

    ``heartbeat`` (seconds of silence before a ping, seconds to wait for any frame after
    it) drops a client that stopped answering (``server/heartbeat.py``); for a transport
    with no keepalive of its own that the client's code must answer (plain TCP).
    Returns the error the session failed with (already written as its last message), so
    an adapter with a status of its own (gRPC) can close with the matching one.
    """
    session = Session(hub, peer)
    watch = Heartbeat(session, *heartbeat) if heartbeat is not None else None
    reader = asyncio.ensure_future(_feed(stream, session, watch))
    try:
        while (frame := await session.next_frame()) is not None:
            if session.failure is None:
                await stream.write(frame)
            else:
                try:  # the session failed: its last frames get a grace, not a wait forever
                    async with asyncio.timeout(FAILED_WRITE_GRACE):
                        await stream.write(frame)
                except TimeoutError:
                    logger.debug("session %s: its last frames were not taken", session.id)
                    break
            # Not kept while waiting for the next: an idle subscriber would hold its last
            # frame (a snapshot, up to max_message_bytes) for as long as it stays idle.
            del frame
    finally:
        session.close()
        reader.cancel()
        if watch is not None:
            watch.stop()
    return session.failure


async def _feed(stream: FrameStream, session: Session, watch: Heartbeat | None) -> None:
    """Hand every frame to the session; end the session when the client stops sending."""
    try:
        while (frame := await stream.read()) is not None:
            if watch is not None:
                watch.heard()
            await session.receive(frame)
            del frame  # not kept while an idle client sends nothing (see serve_session)
    except StatehubError as error:  # a frame the session or the transport refused
        session.fail(error)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # the connection broke while reading: nothing to answer
        logger.debug("session %s: reading ended: %r", session.id, error)
    finally:
        session.end()
