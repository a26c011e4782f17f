"""Bounds on connections, so idle or half-open sockets cannot lock everyone out.

Every socket a port accepts holds a file descriptor until it closes; at the process's
``RLIMIT_NOFILE`` the server can accept nothing more, and asyncio logs each failed
``accept()``. Three rules keep a port open to new clients:

- **handshake timeout**: a connection that has not completed its first request (a whole
  HTTP request head on the web port, the first frame on the TCP port) within
  ``HANDSHAKE_TIMEOUT`` seconds is closed;
- **a bound on open connections** (``ConnectionBudget``), shared by the web and TCP ports
  and below the file descriptor limit: a connection over it is refused at once, with a
  reason (an HTTP 503 or a last error frame), so its descriptor is freed;
- **rate-limited logging** of errors the event loop reports (``accept()`` out of
  descriptors): each distinct message at most once per ``LOG_INTERVAL`` seconds, with
  the count of those left out.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Seconds a new connection has to complete its first request (HTTP head, TCP frame).
HANDSHAKE_TIMEOUT = 10.0
#: File descriptors kept out of the budget: gRPC's port, data files, logs, Redis.
RESERVED_DESCRIPTORS = 128
#: The bound when the descriptor limit is unlimited or very high.
MAX_CONNECTIONS = 50_000
#: Seconds between two log lines of one kind of event-loop error.
LOG_INTERVAL = 10.0


def default_max_connections() -> int:
    """Open connections the web and TCP ports may hold together: below the soft
    ``RLIMIT_NOFILE`` by ``RESERVED_DESCRIPTORS``, at most ``MAX_CONNECTIONS``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - RESERVED_DESCRIPTORS))


class ConnectionBudget:
    """A count of open connections against a bound."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = default_max_connections() if limit is None else limit
        self.open = 0
        self.refused = 0
        self._last_refusal_log = 0.0

    def take(self, port: str) -> bool:
        """Count one more connection; False (not counted) if the bound is reached."""
        if self.open >= self.limit:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= LOG_INTERVAL:
                self._last_refusal_log = now
                logger.warning(
                    "%s port: %d connections open, the limit (%d, below the file "
                    "descriptor limit): refusing new ones (%d so far)",
                    port,
                    self.open,
                    self.limit,
                    self.refused,
                )
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


class Handshaking(Protocol):
    """A connection that has not completed its first request yet."""

    def handshake_expired(self) -> None:
        """``HANDSHAKE_TIMEOUT`` passed first: close the connection."""


class HandshakeDeadlines:
    """The connections of one port still waiting for their first request, and one timer
    for all of them.

    Not a timer per connection: asyncio keeps a cancelled timer in its heap until it would
    have fired, so a connection that completed its handshake at once still held one (about
    200 bytes) for ``timeout`` seconds, and idle subscribers are mostly such connections.
    """

    __slots__ = ("_timeout", "_timer", "_waiting")

    def __init__(self, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self._timeout = timeout
        #: By connection, its deadline; in the order they came, so in deadline order.
        self._waiting: dict[Handshaking, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def start(self, connection: Handshaking) -> None:
        """``connection`` has ``timeout`` seconds from now to complete its first request."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        self._waiting[connection] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def done(self, connection: Handshaking) -> None:
        """``connection`` completed its first request, or closed: no deadline any more."""
        self._waiting.pop(connection, None)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._waiting:
            connection, deadline = next(iter(self._waiting.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del self._waiting[connection]
            connection.handshake_expired()


class RateLimitedLoopErrors:
    """An event loop exception handler that logs each kind of error at most once per
    ``interval`` seconds (asyncio logs every failed ``accept()`` otherwise)."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        kind = str(context.get("message", ""))
        exception = context.get("exception")
        if exception is not None:
            kind += f" {type(exception).__name__}"
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        if left_out:
            context = {
                **context,
                "message": f"{kind} ({left_out} more in the last {self.interval:.0f} s not logged)",
            }
        loop.default_exception_handler(context)
        if len(self._last) > 1_000:  # bounded: forget the oldest kinds
            for old in sorted(self._last, key=self._last.__getitem__)[:500]:
                del self._last[old]
