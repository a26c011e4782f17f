from __future__ import annotations

import logging
import math

import pytest

from statehub import StateDictionary
from statehub.endpoints.config import parse_config
from statehub.endpoints.logging_rules import (
    CHANGED,
    FIRST_VALUE,
    MAX_ABSOLUTE_CHANGE,
    MAX_FRACTIONAL_CHANGE,
    MAX_INTERVAL,
    LoggedValue,
    LoggingRules,
    LogSchedule,
    log_reason,
)
from statehub.endpoints.service import EndpointService
from support.clock import FakeClock

OFF = LoggingRules(log_interval=10)


def test_first_value_is_logged_whatever_it_is() -> None:
    for value in (None, 1, "text", [1], math.nan):
        assert log_reason(OFF, None, value, 0.0) == FIRST_VALUE


def test_defaults_are_off_so_numeric_changes_alone_do_not_log() -> None:
    last = LoggedValue(1.0, 0.0)
    assert log_reason(OFF, last, 1000.0, 10_000.0) is None


def test_max_interval_is_more_than_not_equal() -> None:
    rules = LoggingRules(log_interval=10, max_interval=30)
    last = LoggedValue(5, 100.0)
    assert log_reason(rules, last, 5, 130.0) is None
    assert log_reason(rules, last, 5, 130.5) == MAX_INTERVAL


def test_max_interval_zero_logs_every_tick() -> None:
    rules = LoggingRules(log_interval=10, max_interval=0)
    assert log_reason(rules, LoggedValue(5, 100.0), 5, 100.1) == MAX_INTERVAL


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("OPEN", "CLOSE", CHANGED),
        ("OPEN", "OPEN", None),
        (None, 1, CHANGED),
        (1, None, CHANGED),
        (None, None, None),
        (True, 1, CHANGED),
        (False, False, None),
        ([1, 2], [1, 2], None),
        ([1, 2], [1, 3], CHANGED),
        (math.nan, math.nan, None),
        (1.0, math.nan, CHANGED),
        (math.inf, math.inf, None),
        (1.0, math.inf, CHANGED),
    ],
)
def test_non_numeric_values_log_when_they_change(
    before: object, after: object, expected: str | None
) -> None:
    assert log_reason(OFF, LoggedValue(before, 0.0), after, 1.0) == expected


def test_max_absolute_change_is_strictly_more() -> None:
    rules = LoggingRules(log_interval=1, max_absolute_change=0.5)
    last = LoggedValue(10.0, 0.0)
    assert log_reason(rules, last, 10.5, 1.0) is None
    assert log_reason(rules, last, 10.51, 1.0) == MAX_ABSOLUTE_CHANGE
    assert log_reason(rules, last, 9.4, 1.0) == MAX_ABSOLUTE_CHANGE


def test_max_fractional_change_uses_the_symmetric_ratio() -> None:
    rules = LoggingRules(log_interval=1, max_fractional_change=0.1)
    # 2|x1-x0|/|x1+x0|: 100 -> 110 is 20/210 = 0.095; 100 -> 111 is 22/211 = 0.104.
    assert log_reason(rules, LoggedValue(100, 0.0), 110, 1.0) is None
    assert log_reason(rules, LoggedValue(100, 0.0), 111, 1.0) == MAX_FRACTIONAL_CHANGE
    # x1 + x0 == 0 with a change: infinitely large, logged; no change: not logged.
    assert log_reason(rules, LoggedValue(-1, 0.0), 1, 1.0) == MAX_FRACTIONAL_CHANGE
    assert log_reason(rules, LoggedValue(0, 0.0), 0, 1.0) is None


def test_absolute_change_zero_logs_any_change() -> None:
    rules = LoggingRules(log_interval=1, max_absolute_change=0)
    assert log_reason(rules, LoggedValue(1, 0.0), 1, 1.0) is None
    assert log_reason(rules, LoggedValue(1, 0.0), 1.000001, 1.0) == MAX_ABSOLUTE_CHANGE


def test_fractional_rule_is_not_masked_by_the_absolute_default() -> None:
    """In dripline the absolute default 0 logged every change first."""
    rules = LoggingRules(log_interval=1, max_fractional_change=0.5)
    assert log_reason(rules, LoggedValue(100, 0.0), 101, 1.0) is None


def test_schedule_ticks_every_interval_without_bursts() -> None:
    schedule = LogSchedule()
    schedule.add("a", 10, now=0.0)
    schedule.add("b", 4, now=0.0)
    assert schedule.pop_due(0.0) == ["a", "b"]
    assert schedule.next_due() == 4.0
    assert schedule.pop_due(3.9) == []
    assert schedule.pop_due(4.0) == ["b"]
    assert schedule.pop_due(10.0) == ["a", "b"]  # b was due at 8: its next is 12, not 14
    assert schedule.next_due() == 12.0
    assert schedule.pop_due(100.0) == ["a", "b"]  # one tick each, not a catch-up burst
    assert schedule.pop_due(100.0) == []
    assert schedule.next_due() == 104.0
    with pytest.raises(ValueError):
        schedule.add("c", 0, now=0.0)


CONFIG = """
name: lab
endpoints:
  - {name: temp, initial_value: 20.0, log_interval: 10, max_interval: 60,
     max_absolute_change: 1.0}
  - {name: ratio, initial_value: 100, log_interval: 10, max_fractional_change: 0.1}
  - {name: state, initial_value: CLOSE, log_interval: 5, calibration: {CLOSE: closed, OPEN: open}}
  - {name: nothing, log_interval: 10}
  - {name: plain, initial_value: 1}
  - {name: on_set, initial_value: 1, log_on_set: true, log_interval: 10,
     max_absolute_change: 5}
"""


@pytest.fixture
def service(clock: FakeClock) -> EndpointService:
    wall = FakeClock()
    wall.now = 1_700_000_000.0
    return EndpointService(StateDictionary(), parse_config(CONFIG), clock=clock, wall_clock=wall)


def logged(service: EndpointService, now: float) -> dict[str, object]:
    return {event.address: event.value_raw for event in service.run_scheduled(now)}


def test_scheduled_logging_with_a_fake_clock(service: EndpointService, clock: FakeClock) -> None:
    start = clock.now
    # First tick: every scheduled endpoint logs its first value, None included.
    assert logged(service, start) == {
        "lab.temp": 20.0,
        "lab.ratio": 100,
        "lab.state": "CLOSE",
        "lab.nothing": None,
        "lab.on_set": 1,
    }
    assert logged(service, start + 5) == {}  # state is due, unchanged
    service.set("temp", 20.9)
    service.set("ratio", 109)
    service.set("state", "OPEN")
    assert logged(service, start + 10) == {"lab.state": "OPEN"}  # the ±1 and 10% not reached
    service.set("temp", 21.5)
    service.set("ratio", 111)
    assert logged(service, start + 20) == {"lab.temp": 21.5, "lab.ratio": 111}
    # Nothing changes; after more than max_interval (60 s) since its last log, temp logs.
    assert logged(service, start + 80) == {}
    assert logged(service, start + 90) == {"lab.temp": 21.5}
    history = service.history("temp")["events"]
    assert [event["value_raw"] for event in history] == [20.0, 21.5, 21.5]  # type: ignore[index]


def test_logged_values_are_published_as_keys(service: EndpointService) -> None:
    service.run_scheduled()
    assert service.state.get("sensor_value.lab.state") == {
        "value_raw": "CLOSE",
        "value_cal": "closed",
        "time": 1_700_000_000.0,
    }


def test_log_on_set_logs_and_counts_as_the_last_log(
    service: EndpointService, clock: FakeClock
) -> None:
    service.run_scheduled(clock.now)
    service.set("on_set", 3)
    assert [e["value_raw"] for e in service.history("on_set")["events"]] == [1, 3]  # type: ignore[index]
    # The scheduler compares with 3 (logged on set): 7 is not more than 5 away, 9 is.
    service.write({"lab.on_set": 7})
    assert logged(service, clock.now + 10) == {}
    service.write({"lab.on_set": 9})
    assert logged(service, clock.now + 20) == {"lab.on_set": 9}


def test_a_failing_calibration_does_not_stop_the_scheduler(
    service: EndpointService, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    service.run_scheduled(clock.now)
    # A raw value the mapping does not know can only get there around the service
    # (a set is refused with 304): write it with the service's own token.
    service.write({"lab.state": "HALF"})
    service.set("temp", 30.0)
    with caplog.at_level(logging.WARNING, logger="statehub.endpoints.service"):
        assert logged(service, clock.now + 10) == {"lab.temp": 30.0}
        assert logged(service, clock.now + 15) == {}
    failures = [r for r in caplog.records if "lab.state" in r.getMessage()]
    assert len(failures) == 1  # reported once, not every tick
    assert "304 invalid value" in failures[0].getMessage()


def test_unscheduled_endpoints_are_not_read(service: EndpointService, clock: FakeClock) -> None:
    assert "lab.plain" not in logged(service, clock.now)
    assert service.history("plain")["events"] == []
