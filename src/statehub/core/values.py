"""JSON-like values: validation with a precise error path, and copying.

State keeps private copies of what it is given and hands out copies, so no caller can
change shared state behind its back through a nested list or dict.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, TypeAlias

JsonValue: TypeAlias = bool | int | float | str | list[Any] | dict[str, Any] | None

_SCALARS = frozenset({type(None), bool, int, float, str})


def checked_copy(value: object, key: str) -> JsonValue:
    """Return a private copy of ``value``; raise ``TypeError`` naming ``key`` and the path.

    Types are kept exactly: only ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``
    and ``dict`` with ``str`` keys are accepted (tuples, sets and subclasses are refused
    rather than silently turned into something else).
    """
    if type(value) in _SCALARS:
        return value  # type: ignore[return-value]
    return _copy_container(value, key, "")


def _copy_container(value: object, key: str, path: str) -> JsonValue:
    kind = type(value)
    if kind is list:
        items: list[Any] = value  # type: ignore[assignment]
        return [
            item if type(item) in _SCALARS else _copy_container(item, key, f"{path}[{index}]")
            for index, item in enumerate(items)
        ]
    if kind is dict:
        mapping: dict[Any, Any] = value  # type: ignore[assignment]
        copied: dict[str, Any] = {}
        for name, item in mapping.items():
            if type(name) is not str:
                raise TypeError(
                    f"key {key!r}: dict keys must be str, got {type(name).__name__} "
                    f"{name!r} at {_describe(path)}"
                )
            copied[name] = (
                item if type(item) in _SCALARS else _copy_container(item, key, f"{path}.{name}")
            )
        return copied
    if kind in _SCALARS:
        return value  # type: ignore[return-value]
    raise TypeError(
        f"key {key!r}: {kind.__name__} is not a JSON-like value at {_describe(path)} "
        "(allowed: None, bool, int, float, str, list, dict with str keys)"
    )


def _describe(path: str) -> str:
    return f"value{path}" if path else "the top level"


def copy_value(value: JsonValue) -> JsonValue:
    """Copy an already validated value (containers deeply, scalars as they are)."""
    kind = type(value)
    if kind is list:
        return [copy_value(item) for item in value]  # type: ignore[union-attr]
    if kind is dict:
        return {name: copy_value(item) for name, item in value.items()}  # type: ignore[union-attr]
    return value


def copy_mapping(content: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """Copy a mapping of validated values."""
    return {key: copy_value(value) for key, value in content.items()}


def check_key(key: object) -> str:
    """Return ``key`` if it is a str; raise ``TypeError`` otherwise."""
    if type(key) is not str:
        raise TypeError(f"keys must be str, got {type(key).__name__} {key!r}")
    return key


def check_duration(key: str, seconds: object) -> float | None:
    """Validate a lease duration: ``None`` (no expiry) or a finite number >= 0."""
    if seconds is None:
        return None
    if type(seconds) not in (int, float):
        raise ValueError(
            f"lease on {key!r}: duration must be a number of seconds or None, "
            f"got {type(seconds).__name__} {seconds!r}"
        )
    try:
        duration = float(seconds)  # type: ignore[arg-type]
    except OverflowError:
        raise ValueError(
            f"lease on {key!r}: duration is too large (an int of "
            f"{seconds.bit_length()} bits; at most {sys.float_info.max:.3g} seconds)"  # type: ignore[attr-defined]
        ) from None
    if math.isnan(duration) or duration < 0:
        raise ValueError(f"lease on {key!r}: duration must be >= 0 seconds, got {seconds!r}")
    return duration
