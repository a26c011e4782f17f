"""``SteadyPacer``: a steady rate when flushes run a little late, no burst after a stall."""

from __future__ import annotations

import pytest

from statehub.core.pacing import SteadyPacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_flush_is_due_at_once_and_the_next_one_interval_later() -> None:
    clock = FakeClock()
    pacer = SteadyPacer(0.1, clock)
    assert pacer.delay() == 0
    pacer.flushed()
    assert pacer.delay() == pytest.approx(0.1)


def test_a_late_flush_keeps_the_schedule() -> None:
    clock = FakeClock()
    pacer = SteadyPacer(0.1, clock)
    pacer.flushed()  # at 100.0: the next is due at 100.1
    clock.now = 100.13  # it happens 30 ms late
    pacer.flushed()
    assert pacer.delay() == pytest.approx(0.07)  # due at 100.2, on the schedule
    flushes = 0
    for _ in range(100):  # every flush 30 ms late: still one per interval
        clock.now += pacer.delay() + 0.03
        pacer.flushed()
        flushes += 1
    assert clock.now == pytest.approx(100.13 + 0.07 + 99 * 0.1 + 0.03)
    assert flushes == 100


def test_after_a_stall_the_missed_ticks_are_dropped_not_sent_in_a_burst() -> None:
    clock = FakeClock()
    pacer = SteadyPacer(0.1, clock)
    pacer.flushed()
    clock.now += 1.0  # idle for ten intervals
    assert pacer.delay() == 0
    pacer.flushed()
    assert pacer.delay() == pytest.approx(0.1)  # a full interval, not another due tick


def test_a_bad_interval_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="interval"):
        SteadyPacer(-1)
