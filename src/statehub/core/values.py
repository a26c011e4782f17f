"""JSON-like values, and bytes: validation with a precise error path, and copying.

State keeps private copies of what it is given and hands out copies, so no caller can
change shared state behind its back through a nested list or dict.

``bytes`` are values too, as NanoVer carries them (msgpack ``bin``: packed arrays in a
selection or a frame-like key): the session protocol and NanoVer's WebSocket protocol
carry them as they are, a store keeps them exactly, and where a format has no bytes
(JSON output, protobuf's ``Struct`` under NanoVer's gRPC services) ``bytes_as_text`` and
docs/limits.md say what stands in for them. ``bytearray`` and ``memoryview`` are refused,
as tuples are: a value keeps its type exactly.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, TypeAlias

from statehub.core.limits import (
    BIG_INT_BYTES,
    ITEM_BYTES,
    MAX_DEPTH,
    MAX_INT_BITS,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    NUMBER_ITEM_BYTES,
    check_int,
    check_key_size,
    check_seconds,
    describe,
    utf8_size,
)
from statehub.errors import ValueLimitError

JsonValue: TypeAlias = bool | int | float | str | bytes | list[Any] | dict[str, Any] | None

_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
#: Ints msgpack carries natively; only those beyond need the full ``check_int``.
_SMALL_MIN = -(2**63)
_SMALL_MAX = 2**64 - 1
_INT_BOUND = 1 << MAX_INT_BITS
_CONTAINERS = frozenset({list, dict})
_ALLOWED = _SCALARS | _CONTAINERS
_STR = frozenset({str})
_NUMBERS = frozenset({int, float, bool, type(None)})
#: Containers up to this many items are checked item by item, larger ones in C-speed passes.
_FEW = 16


def checked_copy(value: object, key: str, max_bytes: int = MAX_VALUE_BYTES) -> JsonValue:
    """Return a private copy of ``value``; raise naming ``key`` and the path if it is bad.

    Types are kept exactly: only ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
    ``list`` and ``dict`` with ``str`` keys are accepted (tuples, sets and subclasses are refused
    rather than silently turned into something else): ``TypeError`` otherwise. A value
    over a limit of ``core.limits`` (depth, int size, lone surrogates, estimated size over
    ``max_bytes``) gets ``ValueLimitError``. The walk is iterative, so no depth of input
    can exhaust the stack.
    """
    kind = type(value)
    if kind is int:
        if not _SMALL_MIN <= value <= _SMALL_MAX:  # type: ignore[operator]
            check_int(value, f"key {key!r}: the top level")  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    if kind is str:
        text: str = value  # type: ignore[assignment]
        size = len(text) if text.isascii() else utf8_size(text, _where(key, None))
        if size > max_bytes:
            raise _too_large(key, size, max_bytes)
        return value  # type: ignore[return-value]
    if kind is bytes:
        if len(value) > max_bytes:  # type: ignore[arg-type]
            raise _too_large(key, len(value), max_bytes)  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    if kind in _SCALARS:
        return value  # type: ignore[return-value]
    return _copy_container(value, key, max_bytes)


def _copy_container(value: object, key: str, max_bytes: int) -> JsonValue:
    if type(value) not in _CONTAINERS:
        raise _not_json(key, type(value), None)
    root: Any = value.copy()  # type: ignore[attr-defined]
    size = ITEM_BYTES
    # Each entry: a source container, its shallow copy (whose nested containers are
    # replaced by copies as they are visited), its depth, and its path as a linked tuple
    # (parent path, list index or dict name), turned into text only when an error names it.
    stack: list[tuple[Any, Any, int, Any]] = [(value, root, 1, None)]
    while stack:
        source, target, depth, path = stack.pop()
        if len(source) <= _FEW:
            size += _visit_few(source, target, depth, path, key, stack)
        else:
            size += _visit_many(source, target, depth, path, key, stack)
        if size > max_bytes:
            raise _too_large(key, size, max_bytes)
    return root  # type: ignore[no-any-return]


def _visit_few(source: Any, target: Any, depth: int, path: Any, key: str, stack: list[Any]) -> int:
    """Check a small container item by item; return its estimated size (see ``ITEM_BYTES``)."""
    size = ITEM_BYTES * len(source)
    if type(source) is list:
        places: Any = enumerate(source)
    else:
        places = source.items()
        for name in source:
            if type(name) is not str or not name.isascii():
                return _visit_many(source, target, depth, path, key, stack)
            size += len(name)
    for place, item in places:
        kind = type(item)
        if kind is str:
            size += len(item) if item.isascii() else utf8_size(item, _where(key, (path, place)))
        elif kind is int:
            if not _SMALL_MIN <= item <= _SMALL_MAX:
                check_int(item, _where(key, (path, place)))
                size += BIG_INT_BYTES
        elif kind is bytes:
            size += len(item)
        elif kind is list or kind is dict:
            if depth >= MAX_DEPTH:
                raise _too_deep(key, (path, place))
            target[place] = child = item.copy()
            stack.append((item, child, depth + 1, (path, place)))
        elif kind not in _SCALARS:
            raise _not_json(key, kind, (path, place))
    return size


def _visit_many(source: Any, target: Any, depth: int, path: Any, key: str, stack: list[Any]) -> int:
    """Check a container with C-speed passes over all its items (a loop in Python would
    cost more than the copy); return its estimated size (see ``ITEM_BYTES``)."""
    size = ITEM_BYTES * len(source)
    if type(source) is list:
        items = source
    else:
        items = source.values()
        try:
            names = "".join(source)  # one pass: every name is a str, and their total size
        except TypeError:
            names = "\ud800"  # not all str: _utf8_names names the first that is not
        size += len(names) if names.isascii() else _utf8_names(source, key, path)
    kinds = set(map(type, items))
    if items is source and kinds <= _NUMBERS:  # a list of numbers: cheaper per item
        size = NUMBER_ITEM_BYTES * len(source)
    extra = _scalar_bytes(items, kinds)
    if extra is None:
        _raise_for_bad_item(source, key, path)
    if kinds & _CONTAINERS:
        places = enumerate(source) if type(source) is list else source.items()
        for place, item in places:
            if type(item) in _CONTAINERS:
                if depth >= MAX_DEPTH:
                    raise _too_deep(key, (path, place))
                target[place] = child = item.copy()
                stack.append((item, child, depth + 1, (path, place)))
    return size + extra  # type: ignore[operator]


def _scalar_bytes(items: Any, kinds: set[type]) -> int | None:
    """Estimated bytes of the strs, bytes and big ints among ``items`` beyond ``ITEM_BYTES``
    each; None if an item is not allowed (``_raise_for_bad_item`` then names it)."""
    if not kinds <= _ALLOWED:
        return None
    extra = 0
    if bytes in kinds:
        extra += sum(len(item) for item in items if type(item) is bytes)
    if str in kinds:
        text = "".join(items if len(kinds) == 1 else [item for item in items if type(item) is str])
        if text.isascii():
            extra += len(text)
        else:
            try:
                extra += len(text.encode("utf-8"))
            except UnicodeEncodeError:  # a lone surrogate
                return None
    if int in kinds:
        ints = items if len(kinds) == 1 else [item for item in items if type(item) is int]
        low, high = min(ints), max(ints)
        if low < _SMALL_MIN or high > _SMALL_MAX:
            if low <= -_INT_BOUND or high >= _INT_BOUND:
                return None
            big = sum(1 for item in ints if not _SMALL_MIN <= item <= _SMALL_MAX)
            extra += BIG_INT_BYTES * big
    return extra


def _utf8_names(mapping: dict[Any, Any], key: str, path: Any) -> int:
    size = 0
    for name in mapping:
        if type(name) is not str:
            raise TypeError(
                f"key {key!r}: dict keys must be str, got {describe(name)} at {_describe(path)}"
            )
        size += utf8_size(name, _where(key, (path, name)))
    return size


def _raise_for_bad_item(container: Any, key: str, path: Any) -> None:
    """Raise the error that names the first item ``_scalar_bytes`` refused."""
    places = enumerate(container) if type(container) is list else container.items()
    for place, item in places:
        kind = type(item)
        if kind is str:
            utf8_size(item, _where(key, (path, place)))
        elif kind is int:
            check_int(item, _where(key, (path, place)))
        elif kind not in _ALLOWED:
            raise _not_json(key, kind, (path, place))
    raise AssertionError(f"key {key!r}: no bad item found at {_describe(path)}")


def _where(key: str, path: Any) -> str:
    return f"key {key!r}: {_describe(path)}"


def _describe(path: Any) -> str:
    """``value.a[1]`` for the path ``((None, "a"), 1)``; ``the top level`` for None."""
    steps: list[str] = []
    while path is not None:
        path, step = path
        steps.append(f"[{step}]" if type(step) is int else f".{step}")
    return "value" + "".join(reversed(steps)) if steps else "the top level"


def _not_json(key: str, kind: type, path: Any) -> TypeError:
    return TypeError(
        f"key {key!r}: {kind.__name__} is not a JSON-like value at {_describe(path)} "
        "(allowed: None, bool, int, float, str, list, dict with str keys)"
    )


def _too_deep(key: str, path: Any) -> ValueLimitError:
    return ValueLimitError(
        f"key {key!r}: {_describe(path)} is nested more than {MAX_DEPTH} containers deep, "
        f"over the limit of {MAX_DEPTH} (protobuf, under NanoVer's services, refuses deeper)"
    )


def _too_large(key: str, size: int, max_bytes: int) -> ValueLimitError:
    return ValueLimitError(
        f"key {key!r}: the value's estimated size of at least {size} bytes is over the limit "
        f"of {max_bytes} bytes"
    )


def copy_value(value: JsonValue) -> JsonValue:
    """Copy an already validated value (containers deeply, scalars as they are)."""
    kind = type(value)
    if kind is list:
        return [copy_value(item) for item in value]  # type: ignore[union-attr]
    if kind is dict:
        return {name: copy_value(item) for name, item in value.items()}  # type: ignore[union-attr]
    return value


#: The one name that stands for bytes in a format without them: ``{"$bytes": base64}``.
BYTES_TAG = "$bytes"


def bytes_as_json(value: bytes) -> dict[str, str]:
    """What stands in for ``value`` where a format has no bytes (JSON output, protobuf's
    ``Struct``): ``{"$bytes": <base64>}``, as MongoDB's extended JSON marks binary data."""
    return {BYTES_TAG: base64.b64encode(value).decode("ascii")}


def json_default(value: object) -> object:
    """``json.dumps``'s ``default`` for values: bytes as ``bytes_as_json``."""
    if type(value) is bytes:
        return bytes_as_json(value)
    raise TypeError(f"{type(value).__name__} is not a value")


def copy_mapping(content: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """Copy a mapping of validated values."""
    return {key: copy_value(value) for key, value in content.items()}


def check_key(key: object) -> str:
    """Return ``key`` if it is a str within ``core.limits``; ``TypeError`` if not a str,
    ``ValueLimitError`` if too long or holding a lone surrogate."""
    if type(key) is not str:
        raise TypeError(f"keys must be str, got {describe(key)}")
    if not key.isascii() or len(key) > MAX_KEY_BYTES:
        check_key_size(key)
    return key


def check_duration(key: str, seconds: object) -> float | None:
    """Validate a lease duration: ``None`` (no expiry) or a number >= 0 (inf: no expiry)."""
    if seconds is None:
        return None
    return check_seconds(seconds, f"lease on {key!r}: duration", allow_infinity=True)
