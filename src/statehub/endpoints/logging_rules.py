"""When to log an endpoint's value: the pure decision and the schedule, clock injected.

Every ``log_interval`` seconds the scheduler reads an endpoint and logs the value if any
rule fires (``log_reason``):

- it is the first value logged;
- more than ``max_interval`` seconds passed since the last log;
- a non-numeric value (str, bool, None, list, dict, NaN or infinity) differs from the last
  logged one;
- ``|x1 - x0| > max_absolute_change``;
- ``2|x1 - x0| / |x1 + x0| > max_fractional_change``.

Thresholds default to ``None``, meaning "off" (dripline's default of 0 logged every change
and masked the fractional rule). The comparison is with the last *logged* value, so slow
drifts are logged once they add up. Nothing here raises on odd values or sleeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

FIRST_VALUE = "first value"
MAX_INTERVAL = "max_interval"
CHANGED = "changed"
MAX_ABSOLUTE_CHANGE = "max_absolute_change"
MAX_FRACTIONAL_CHANGE = "max_fractional_change"


@dataclass(frozen=True, slots=True)
class LoggingRules:
    """An endpoint's logging thresholds; ``None`` switches a rule (or the schedule) off."""

    log_interval: float | None = None
    max_interval: float | None = None
    max_absolute_change: float | None = None
    max_fractional_change: float | None = None


@dataclass(frozen=True, slots=True)
class LoggedValue:
    """The value last logged and when (on the scheduler's clock)."""

    value: Any
    time: float


def is_number(value: object) -> bool:
    """A finite int or float (bools are states, not numbers)."""
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def same_value(a: object, b: object) -> bool:
    """Equality where NaN equals NaN and ``True`` is not ``1``."""
    if type(a) is float and type(b) is float and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    try:
        return bool(a == b)
    except Exception:  # an exotic value whose comparison fails counts as a change
        return False


def log_reason(
    rules: LoggingRules, last: LoggedValue | None, value: object, now: float
) -> str | None:
    """Why ``value`` should be logged at ``now``, or None if no rule fires."""
    if last is None:
        return FIRST_VALUE
    if rules.max_interval is not None and now - last.time > rules.max_interval:
        return MAX_INTERVAL
    previous = last.value
    if not (is_number(value) and is_number(previous)):
        return None if same_value(previous, value) else CHANGED
    x0 = float(previous)
    x1 = float(value)  # type: ignore[arg-type]
    change = abs(x1 - x0)
    if rules.max_absolute_change is not None and change > rules.max_absolute_change:
        return MAX_ABSOLUTE_CHANGE
    if rules.max_fractional_change is not None and change > 0:
        total = abs(x1 + x0)
        fraction = math.inf if total == 0 else 2 * change / total
        if fraction > rules.max_fractional_change:
            return MAX_FRACTIONAL_CHANGE
    return None


class LogSchedule:
    """When each scheduled endpoint is next due; pure bookkeeping on a given ``now``.

    An endpoint added at ``now`` is first due at ``now`` (so its first value is logged at
    start-up), then every ``interval`` after that. A late tick does not cause a burst of
    catch-up ticks: if the next due time has already passed, it is one interval after now.
    """

    def __init__(self) -> None:
        self._interval: dict[str, float] = {}
        self._due: dict[str, float] = {}

    def add(self, name: str, interval: float, now: float) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"{name}: log_interval must be a finite number > 0, got {interval!r}")
        self._interval[name] = interval
        self._due[name] = now

    def remove(self, name: str) -> None:
        self._interval.pop(name, None)
        self._due.pop(name, None)

    def __len__(self) -> int:
        return len(self._due)

    def next_due(self) -> float | None:
        """The earliest due time, or None with nothing scheduled."""
        return min(self._due.values(), default=None)

    def pop_due(self, now: float) -> list[str]:
        """The names due at ``now`` (in name order); each is rescheduled."""
        due = sorted(name for name, at in self._due.items() if at <= now)
        for name in due:
            following = self._due[name] + self._interval[name]
            self._due[name] = following if following > now else now + self._interval[name]
        return due
