"""Values as stored text: JSON that brings every type back exactly.

Python's ``json`` already keeps what matters: an int stays an int (any size), a float
stays a float (``1.0`` is written ``1.0``; NaN and the infinities as ``NaN``,
``Infinity``, ``-Infinity``; ``repr`` round-trips every float exactly), bool stays bool,
dicts keep their order, and ``ensure_ascii`` escapes lone surrogates so any str survives.

Two gaps: Python refuses to turn an int of more than ``sys.get_int_max_str_digits()``
decimal digits into text, and JSON has no bytes. Such values are written in a tagged form
(format 1) where every node says its type, ints are hexadecimal, which has no length
limit, and bytes are base64.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from statehub.core.values import JsonValue

#: Plain JSON text.
PLAIN = 0
#: Tagged JSON: ``["i", hex]``, ``["f", float]``, ``["s", str]``, ``["b", bool]``,
#: ``["y", base64]`` (bytes), ``["n"]``, ``["l", [...]]``, ``["d", [[name, node], ...]]``.
TAGGED = 1

_dumps = json.JSONEncoder(ensure_ascii=True, allow_nan=True, separators=(",", ":")).encode
_loads = json.JSONDecoder().decode


def encode_value(value: JsonValue) -> tuple[str, int]:
    """The stored text of a validated value and its format."""
    try:
        return _dumps(value), PLAIN
    except (ValueError, TypeError):  # an int too long for decimal text, or bytes
        return _dumps(_tag(value)), TAGGED


def decode_value(text: str, form: int) -> JsonValue:
    """The value ``encode_value`` wrote; ``ValueError`` if the text is not such a value."""
    if form == PLAIN:
        value: JsonValue = _loads(text)
        return value
    if form == TAGGED:
        return _untag(_loads(text))
    raise ValueError(f"unknown value format {form!r}")


def _tag(value: Any) -> Any:
    kind = type(value)
    if kind is bool:
        return ["b", value]
    if kind is int:
        return ["i", format(value, "x")]
    if kind is float:
        return ["f", value]
    if kind is str:
        return ["s", value]
    if kind is bytes:
        return ["y", base64.b64encode(value).decode("ascii")]
    if value is None:
        return ["n"]
    if kind is list:
        return ["l", [_tag(item) for item in value]]
    if kind is dict:
        return ["d", [[name, _tag(item)] for name, item in value.items()]]
    raise TypeError(f"cannot store {kind.__name__} {value!r}")


def _untag(node: Any) -> JsonValue:
    tag = node[0]
    if tag == "i":
        return int(node[1], 16)
    if tag in ("b", "f", "s"):
        value: JsonValue = node[1]
        return value
    if tag == "y":
        return base64.b64decode(node[1], validate=True)
    if tag == "n":
        return None
    if tag == "l":
        return [_untag(item) for item in node[1]]
    if tag == "d":
        return {name: _untag(item) for name, item in node[1]}
    raise ValueError(f"unknown tag {tag!r} in a stored value")
