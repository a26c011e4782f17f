"""Pacing on the tests' fake clock: ``Pacer`` (at most one flush per interval, counted
from the flush that happened) and ``SteadyPacer`` (a steady rate when flushes run a
little late); neither sends a burst after a stall."""

from __future__ import annotations

import pytest

from statehub.core.pacing import Pacer, SteadyPacer
from support.clock import FakeClock


def test_the_first_flush_is_due_at_once_and_the_next_one_interval_later(
    clock: FakeClock,
) -> None:
    for pacer in (Pacer(0.1, clock), SteadyPacer(0.1, clock)):
        assert pacer.delay() == 0
        pacer.flushed()
        assert pacer.delay() == pytest.approx(0.1)
        clock.advance(0.04)
        assert pacer.delay() == pytest.approx(0.06)


def test_a_late_flush_moves_the_pacers_schedule_but_not_the_steady_one(
    clock: FakeClock,
) -> None:
    pacer, steady = Pacer(0.1, clock), SteadyPacer(0.1, clock)
    pacer.flushed()
    steady.flushed()
    clock.advance(0.13)  # both flush 30 ms late
    pacer.flushed()
    steady.flushed()
    assert pacer.delay() == pytest.approx(0.1)  # an interval after the flush that happened
    assert steady.delay() == pytest.approx(0.07)  # due at 0.2, on the schedule


def test_the_steady_pacer_keeps_one_flush_per_interval_when_each_is_late(
    clock: FakeClock,
) -> None:
    start = clock.now
    pacer = SteadyPacer(0.1, clock)
    pacer.flushed()
    for _ in range(100):  # every flush 30 ms late: still one per interval
        clock.advance(pacer.delay() + 0.03)
        pacer.flushed()
    assert clock.now == pytest.approx(start + 100 * 0.1 + 0.03)


@pytest.mark.parametrize("kind", [Pacer, SteadyPacer])
def test_after_a_stall_the_missed_ticks_are_dropped_not_sent_in_a_burst(
    kind: type[Pacer] | type[SteadyPacer], clock: FakeClock
) -> None:
    pacer = kind(0.1, clock)
    pacer.flushed()
    clock.advance(1.0)  # idle for ten intervals
    assert pacer.delay() == 0
    pacer.flushed()
    assert pacer.delay() == pytest.approx(0.1)  # a full interval, not another due tick


@pytest.mark.parametrize("kind", [Pacer, SteadyPacer])
def test_a_bad_interval_is_refused_by_name(kind: type[Pacer] | type[SteadyPacer]) -> None:
    with pytest.raises(ValueError, match="interval"):
        kind(-1)
