"""Interval pacing for change streams: at most one flush per interval, never a burst."""

from __future__ import annotations

import time

from statehub.core.limits import check_seconds


def check_interval(interval: object) -> float:
    """``interval`` as float seconds; ``ValueError`` unless it is a finite number >= 0."""
    return check_seconds(interval, "interval")


class Pacer:
    """Says how long to wait before the next flush.

    The next flush is due ``interval`` seconds after the previous one actually happened,
    so an idle period never builds up a backlog of due flushes (NanoVer's fixed-rate
    schedule sent a burst of them after every pause).
    """

    __slots__ = ("_interval", "_next_due")

    def __init__(self, interval: float) -> None:
        self._interval = check_interval(interval)
        self._next_due = 0.0

    @property
    def interval(self) -> float:
        return self._interval

    def delay(self) -> float:
        """Seconds to wait before flushing again (0 when a flush is allowed now)."""
        return max(0.0, self._next_due - time.monotonic())

    def flushed(self) -> None:
        """Record that a flush happened now."""
        self._next_due = time.monotonic() + self._interval
