"""The tests' one fake clock, for everything that takes a ``clock`` (leases, expiry, TTLs,
history, logging schedules, ``Pacer`` and ``SteadyPacer``): time moves only when a test
says so, so expiry and pacing are checked exactly, with no sleep."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
