"""The session protocol's codec: one msgpack-encoded list of message maps per frame.

A frame is a batch, so either side can pipeline many messages in one transport message.
Ints keep their type: those beyond msgpack's 64-bit range travel as ext type 1 holding
the decimal string. Floats travel as float64, so NaN and infinities survive.
"""

from __future__ import annotations

import sys
from typing import Any

import msgpack

from statehub.errors import ProtocolError

#: msgpack ext type code of an int outside the 64-bit range (payload: its decimal string).
BIG_INT_EXT = 1
#: Python converts ints of at most this many digits from text (plus one for a sign).
_MAX_INT_CHARACTERS = sys.get_int_max_str_digits() + 1


def _default(value: object) -> object:
    if type(value) is int:
        return msgpack.ExtType(BIG_INT_EXT, str(value).encode("ascii"))
    raise TypeError(f"cannot encode {type(value).__name__} {value!r}")


def _ext_hook(code: int, data: bytes) -> object:
    if code != BIG_INT_EXT:
        raise ProtocolError(f"unknown msgpack ext type {code}")
    if len(data) > _MAX_INT_CHARACTERS:
        raise ProtocolError(
            f"ext type {BIG_INT_EXT} holds an int of {len(data)} characters, over the limit "
            f"of {_MAX_INT_CHARACTERS - 1} digits"
        )
    try:
        return int(data.decode("ascii"))
    except ValueError:
        shown = data[:40] + (b"..." if len(data) > 40 else b"")
        raise ProtocolError(f"ext type {BIG_INT_EXT} holds {shown!r}, not an int") from None


def encode_value(value: object) -> bytes:
    """Encode one value or message map alone; ``join_frame`` makes a frame of messages.

    Encoding each message once lets a sender count its bytes before the frame is written,
    build large messages piece by piece, and send the same bytes to several peers.
    """
    try:
        return msgpack.packb(value, use_bin_type=True, default=_default)  # type: ignore[no-any-return]
    except (OverflowError, ValueError) as error:
        raise TypeError(f"cannot encode value: {error}") from None


def map_header(count: int) -> bytes:
    """msgpack's header of a map of ``count`` entries (the entries follow it)."""
    return _container_header(count, 0x80, b"\xde", b"\xdf")


def array_header(count: int) -> bytes:
    """msgpack's header of an array of ``count`` items (the items follow it)."""
    return _container_header(count, 0x90, b"\xdc", b"\xdd")


def _container_header(count: int, fixed: int, header16: bytes, header32: bytes) -> bytes:
    if count < 16:
        return bytes((fixed | count,))
    if count < 0x10000:
        return header16 + count.to_bytes(2, "big")
    return header32 + count.to_bytes(4, "big")


def join_frame(encoded: list[bytes]) -> bytes:
    """The frame holding the ``encoded`` messages (from ``encode_value``), in order."""
    return array_header(len(encoded)) + b"".join(encoded)


def encode_batch(messages: list[dict[str, Any]]) -> bytes:
    """Encode a batch of message maps as one frame.

    Raises ``TypeError`` if a message holds something msgpack cannot carry.
    """
    return encode_value(messages)


def decode_value(data: bytes) -> Any:
    """The value ``encode_value`` gave ``data`` for (lists as lists, maps as dicts)."""
    return msgpack.unpackb(data, raw=False, use_list=True, ext_hook=_ext_hook)


def decode_batch(frame: bytes, *, strict_map_key: bool = True) -> list[dict[str, Any]]:
    """Decode one frame into its message maps; ``ProtocolError`` if it is malformed.

    ``strict_map_key=False`` lets maps with keys other than str and bytes through (the
    server does that, so that a request with an int key gets an error reply naming the
    key instead of the whole frame being refused).
    """
    try:
        batch = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=strict_map_key,
            use_list=True,
            ext_hook=_ext_hook,
        )
    except ProtocolError:
        raise
    except msgpack.StackError:
        raise ProtocolError(
            "malformed frame: nested 1024 levels deep or more (the decoder's limit; values "
            "have a lower one, see docs/limits.md)"
        ) from None
    except Exception as error:  # msgpack raises several types (ExtraData, ValueError...)
        raise ProtocolError(f"malformed frame: {type(error).__name__}: {error}") from None
    if type(batch) is not list:
        raise ProtocolError(f"a frame must be a list of messages, got {type(batch).__name__}")
    for index, message in enumerate(batch):
        if type(message) is not dict:
            raise ProtocolError(
                f"message {index} of the frame is a {type(message).__name__}, not a map"
            )
    return batch
