"""The server's application heartbeat: a session whose client went silent is dropped.

A client process that is frozen (SIGSTOP, a debugger) while its host lives keeps its TCP
connection: its kernel still acknowledges data and answers TCP keepalive probes, so only a
message the client's own code must answer can tell it from a live one. gRPC has HTTP/2
pings for this; the session protocol over plain TCP has this heartbeat: when the server
has heard nothing from a session for ``every`` seconds it sends ``{"ping": n}``, and when
no frame at all (the ``pong``, or anything else) arrives within ``within`` seconds after
that, the session fails with ``HeartbeatTimeoutError`` and is closed at once, through
``Session.close``, releasing its leases, locks and bound keys: a client is dropped within
``every + within`` seconds of its last frame.

One timer per connection (no task: an idle subscriber should cost a few hundred bytes,
not a coroutine), re-armed for the time still left rather than ticking.
"""

from __future__ import annotations

import asyncio
import logging

from statehub.errors import HeartbeatTimeoutError
from statehub.server.session import Session

logger = logging.getLogger(__name__)


class Heartbeat:
    """Pings ``session`` after ``every`` s of silence; drops it ``within`` s later if still
    silent. The transport calls ``heard()`` for each frame and ``stop()`` when it ends."""

    __slots__ = (
        "_every",
        "_heard_at",
        "_loop",
        "_pinged_at",
        "_pings",
        "_session",
        "_timer",
        "_within",
    )

    def __init__(self, session: Session, every: float, within: float) -> None:
        if every <= 0 or within <= 0:
            raise ValueError(
                f"heartbeat: 'every' ({every}) and 'within' ({within}) must be seconds > 0"
            )
        self._session = session
        self._every = every
        self._within = within
        self._loop = asyncio.get_running_loop()
        self._heard_at = self._loop.time()
        self._pinged_at: float | None = None  # while a ping waits for any frame
        self._pings = 0
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(
            self._heard_at + every, self._check
        )

    def heard(self) -> None:
        """A frame came from the client: it is alive."""
        self._heard_at = self._loop.time()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        now = self._loop.time()
        if self._pinged_at is not None and self._heard_at < self._pinged_at:
            self._timer = None
            self._drop(now - self._heard_at)
            return
        self._pinged_at = None
        silent_until = self._heard_at + self._every
        if now < silent_until:
            self._timer = self._loop.call_at(silent_until, self._check)
            return
        self._pings += 1
        self._session.ping(self._pings)
        self._pinged_at = now
        self._timer = self._loop.call_at(now + self._within, self._check)

    def _drop(self, silent_for: float) -> None:
        session = self._session
        logger.info(
            "session %s (%s, %s): no frame for %.1f s after a ping: dropped",
            session.id,
            session.client,
            session.peer.address,
            silent_for,
        )
        session.fail(
            HeartbeatTimeoutError(
                f"the server heard nothing from this client for {silent_for:.1f} s and got no "
                f"answer to a ping within {self._within} s (keepalive {self._every} s + "
                f"keepalive timeout {self._within} s): the session was dropped and its "
                "leases, locks and bound keys released"
            )
        )
