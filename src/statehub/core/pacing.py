"""Interval pacing for change streams: at most one flush per interval, never a burst."""

from __future__ import annotations

import time


class Pacer:
    """Says how long to wait before the next flush.

    The next flush is due ``interval`` seconds after the previous one actually happened,
    so an idle period never builds up a backlog of due flushes (NanoVer's fixed-rate
    schedule sent a burst of them after every pause).
    """

    __slots__ = ("_interval", "_next_due")

    def __init__(self, interval: float) -> None:
        if type(interval) not in (int, float) or not interval >= 0:
            raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}")
        self._interval = float(interval)
        self._next_due = 0.0

    def delay(self) -> float:
        """Seconds to wait before flushing again (0 when a flush is allowed now)."""
        return max(0.0, self._next_due - time.monotonic())

    def flushed(self) -> None:
        """Record that a flush happened now."""
        self._next_due = time.monotonic() + self._interval
