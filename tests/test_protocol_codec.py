"""The session protocol's codec: batches of message maps, types kept exactly."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from statehub.errors import ProtocolError
from statehub.protocol import decode_batch, encode_batch

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.lists(st.dictionaries(st.text(max_size=5), json_like, max_size=4), max_size=4))
def test_roundtrip_keeps_values_and_types(messages: list[dict[str, object]]) -> None:
    decoded = decode_batch(encode_batch(messages))
    assert decoded == messages
    assert _types(decoded) == _types(messages)


def _types(value: object) -> object:
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value)


def test_ints_beyond_64_bits_and_special_floats_survive() -> None:
    values = [2**64, -(2**63) - 1, 2**64 - 1, -(2**63), 10**40, math.inf, -math.inf]
    (decoded,) = decode_batch(encode_batch([{"v": values, "nan": math.nan}]))
    assert decoded["v"] == values
    assert [type(v) for v in decoded["v"]] == [type(v) for v in values]
    assert math.isnan(decoded["nan"])
    assert type(decode_batch(encode_batch([{"one": 1.0}]))[0]["one"]) is float


def test_big_ints_travel_as_ext_type_1_with_the_decimal_string() -> None:
    raw = msgpack.unpackb(encode_batch([{"v": 2**70}]), raw=False)
    assert raw[0]["v"] == msgpack.ExtType(1, str(2**70).encode())


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        (b"\xc1", "malformed"),
        (b"", "malformed"),
        (msgpack.packb({"id": 1}), "list"),
        (msgpack.packb([1]), "not a map"),
        (msgpack.packb([{"id": 1}]) + b"\x00", "malformed"),
        (msgpack.packb([{1: "int key"}]), "malformed"),
        (msgpack.packb([{"v": msgpack.ExtType(7, b"")}]), "ext type 7"),
        (msgpack.packb([{"v": msgpack.ExtType(1, b"12x")}]), "not an int"),
    ],
)
def test_malformed_frames_raise_protocol_error(frame: bytes, text: str) -> None:
    with pytest.raises(ProtocolError, match=text):
        decode_batch(frame)


def test_lenient_map_keys_for_the_server() -> None:
    frame = msgpack.packb([{"id": 1, "updates": {1: "x"}}])
    assert decode_batch(frame, strict_map_key=False) == [{"id": 1, "updates": {1: "x"}}]


def test_encoding_something_msgpack_cannot_carry_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="set"):
        encode_batch([{"v": {1, 2}}])
