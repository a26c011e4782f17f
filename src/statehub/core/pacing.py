"""Interval pacing for change streams: at most one flush per interval, never a burst."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

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

    __slots__ = ("_clock", "_interval", "_next_due")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = check_interval(interval)
        self._clock = clock
        self._next_due = -math.inf

    @property
    def interval(self) -> float:
        return self._interval

    def delay(self) -> float:
        """Seconds to wait before flushing again (0 when a flush is allowed now)."""
        return max(0.0, self._next_due - self._clock())

    def flushed(self) -> None:
        """Record that a flush happened now."""
        self._next_due = self._clock() + self._interval


class SteadyPacer:
    """Says how long to wait for the next tick of a steady clock of period ``interval``.

    A flush a little late keeps the schedule (the next one is due one interval after the
    previous was due, not after it happened), so the rate holds at 1/``interval`` where
    ``Pacer`` would lose the lateness of every tick. A flush more than one interval late
    (after an idle period, or a stall) starts the schedule afresh from now: the missed
    ticks are dropped, never sent as a burst as NanoVer's fixed-rate schedule did.
    """

    __slots__ = ("_clock", "_interval", "_next_due")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = check_interval(interval)
        self._clock = clock
        self._next_due = -math.inf

    def delay(self) -> float:
        """Seconds to wait before flushing again (0 when a flush is due now)."""
        return max(0.0, self._next_due - self._clock())

    def flushed(self) -> None:
        """Record that the due flush happened now."""
        now = self._clock()
        due = self._next_due + self._interval
        self._next_due = due if due > now else now + self._interval
