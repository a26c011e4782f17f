"""The limits every key and value keeps, so that every protocol statehub speaks carries it.

A value is accepted only if each way it can leave the server can carry it back out:

- the session protocol (msgpack): strings must be valid UTF-8 (no lone surrogates); ints
  beyond 64 bits travel as decimal text, which Python refuses beyond 4,300 digits;
- NanoVer's gRPC services (``google.protobuf.Struct``): numbers are doubles, so an int
  must fit in a double's range; protobuf refuses messages nested more than 100 deep, which
  a ``Struct`` inside a ``StateUpdate`` reaches at 33 nested dicts;
- the 4 MiB messages both protocols use by default (gRPC clients' receive limit).

So: at most ``MAX_DEPTH`` nested containers, ints of at most ``MAX_INT_BITS`` bits, keys
of at most ``MAX_KEY_BYTES`` bytes of UTF-8, and values whose estimated encoded size (see
``ITEM_BYTES``) is at most ``MAX_VALUE_BYTES``. docs/limits.md explains each one.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass

from statehub.errors import ValueLimitError

#: Containers (dicts and lists) nested in one value; a value nested 33 dicts deep cannot
#: be parsed by protobuf inside a NanoVer ``StateUpdate``.
MAX_DEPTH = 32
#: Bits of an int (sign aside): up to 2**1023 - 1 in magnitude, which a double still holds.
MAX_INT_BITS = 1023
#: UTF-8 bytes of a key: a key travels in every change and lease that names it.
MAX_KEY_BYTES = 4096
#: Estimated encoded bytes of one value: with its key and framing it stays well under the
#: 4 MiB message that gRPC clients accept by default.
MAX_VALUE_BYTES = 3 * 1024 * 1024
#: Estimated bytes per item (the value itself, each list item, each dict entry), on top of
#: the UTF-8 bytes of strings and dict keys: at least what msgpack or protobuf spends on
#: one number, container or length prefix.
ITEM_BYTES = 16
#: Estimated bytes per item of a long list holding only numbers, bools and None: protobuf
#: spends 11 on a double in a ``ListValue`` (tag, length, tag, 8 bytes), msgpack at most 9.
#: So a NanoVer selection of 250,000 particle indices (2.75 MB) is within the limit.
NUMBER_ITEM_BYTES = 11
#: Estimated bytes of an int beyond 64 bits: msgpack sends it as decimal text (309 digits
#: at most, within ``MAX_INT_BITS``).
BIG_INT_BYTES = 320

_INT_BOUND = 1 << MAX_INT_BITS


@dataclass(frozen=True, slots=True)
class ValueSizeLimits:
    """The largest value (estimated bytes) a key may hold: ``default``, or for a key under
    one of ``prefixes`` ((key prefix, bytes) pairs) that prefix's (the longest match wins).

    A lab sets a small limit where clients should only write small values and a large one
    where a NanoVer scene keeps big selections; a limit above ``MAX_VALUE_BYTES`` needs
    message limits that carry it (``server.limits.check_value_limits_fit``).
    """

    default: int = MAX_VALUE_BYTES
    prefixes: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for prefix, size in (("", self.default), *self.prefixes):
            if type(prefix) is not str or type(size) is not int or size < 1:
                raise ValueError(
                    f"value size limit for prefix {prefix!r}: must be an int >= 1 bytes, "
                    f"got {size!r}"
                )
        # Longest first, so the first match is the most specific.
        ordered = tuple(sorted(self.prefixes, key=lambda rule: -len(rule[0])))
        object.__setattr__(self, "prefixes", ordered)

    def for_key(self, key: str) -> int:
        """The largest value ``key`` may hold, in estimated bytes."""
        for prefix, size in self.prefixes:
            if key.startswith(prefix):
                return size
        return self.default

    @property
    def largest(self) -> int:
        """The largest value any key may hold."""
        return max([self.default, *(size for _, size in self.prefixes)])


_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60


def describe(value: object) -> str:
    """A short description of ``value`` for an error message, whatever its size or depth.

    ``repr`` itself fails on some values a client can send (an int of more than 4,300
    digits, a list nested thousands deep), so it is never called on them whole.
    """
    if type(value) is int and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    if type(value) in (list, dict, tuple, set, frozenset):
        return f"a {type(value).__name__} of {len(value)} items"  # type: ignore[arg-type]
    try:
        return f"{type(value).__name__} {_SHORT.repr(value)}"
    except Exception:  # a repr that fails on its own is not worth a second error
        return f"a {type(value).__name__}"


def check_int(value: int, where: str) -> None:
    """Refuse an int beyond ``MAX_INT_BITS`` bits; ``where`` says whose and where it is."""
    if not -_INT_BOUND < value < _INT_BOUND:
        raise ValueLimitError(
            f"{where}: an int of {value.bit_length()} bits is over the limit of "
            f"{MAX_INT_BITS} bits (|n| < 2**{MAX_INT_BITS}, so that it fits in a double)"
        )


def utf8_size(text: str, where: str) -> int:
    """Bytes of ``text`` in UTF-8; ``ValueLimitError`` if it holds a lone surrogate."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise ValueLimitError(
            f"{where}: the str holds a lone surrogate ({error.object[error.start]!r} at "
            f"index {error.start}), which UTF-8 and so no protocol can carry"
        ) from None


def check_key_size(key: str) -> None:
    """Refuse a key over ``MAX_KEY_BYTES`` bytes of UTF-8 or holding a lone surrogate."""
    size = utf8_size(key, f"key {key[:60]!r}")
    if size > MAX_KEY_BYTES:
        raise ValueLimitError(
            f"key {key[:60]!r}...: {size} bytes of UTF-8 is over the limit of "
            f"{MAX_KEY_BYTES} bytes for a key"
        )


def check_seconds(value: object, what: str, *, allow_infinity: bool = False) -> float:
    """``value`` (an int or float >= 0) as float seconds; ``ValueError`` naming ``what``.

    An int too large for a float is refused with the limit, not an ``OverflowError``;
    infinity only if ``allow_infinity``; NaN never.
    """
    finite = "" if allow_infinity else "finite "
    if type(value) not in (int, float):
        raise ValueError(f"{what} must be a {finite}number of seconds >= 0, got {describe(value)}")
    if type(value) is int and not -_INT_BOUND < value < _INT_BOUND:
        raise ValueLimitError(
            f"{what}: an int of {value.bit_length()} bits is beyond the largest number "
            f"of seconds (about {math.ldexp(1, MAX_INT_BITS):.3g})"
        )
    seconds = float(value)  # type: ignore[arg-type]
    if math.isnan(seconds) or seconds < 0 or (seconds == math.inf and not allow_infinity):
        raise ValueError(f"{what} must be a {finite}number of seconds >= 0, got {value!r}")
    return seconds
