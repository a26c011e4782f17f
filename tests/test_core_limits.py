"""Value limits (docs/limits.md): what is accepted can be carried by every protocol, what is
refused gets a ValueLimitError naming the key, the path and the limit, and nothing else."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from statehub import DictionaryChange, StateDictionary, ValueLimitError
from statehub.core.limits import MAX_DEPTH, MAX_INT_BITS, MAX_KEY_BYTES, MAX_VALUE_BYTES
from statehub.core.pacing import check_interval
from statehub.core.rwlock import RWLockTable
from statehub.core.values import checked_copy
from statehub.protocol import decode_batch, encode_batch
from statehub.protocol.errors import error_to_wire
from statehub.server.nanover_compat import _set_value
from statehub.server.nanover_proto import state_service_pb2


def nested(depth: int, kind: str = "dict", leaf: object = 1) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = {"a": value} if kind == "dict" else [value]
    return value


def refused(value: object, key: str = "k") -> str:
    """The message of the error writing ``value`` raises; the state must be unchanged."""
    state = StateDictionary()
    with pytest.raises(ValueLimitError) as error:
        state.update_state(None, DictionaryChange({"good": 1, key: value}))
    assert state.copy_content() == {} and state.revision == 0
    return str(error.value)


def carried_by_every_protocol(key: str, value: Any) -> None:
    """The value survives msgpack (session protocol), protobuf (NanoVer) and JSON."""
    frame = encode_batch([{"sub": 1, "updates": {key: value}}])
    assert key in decode_batch(frame)[0]["updates"]
    changed = struct_pb2.Struct()
    _set_value(changed.fields[key], value)
    message = state_service_pb2.StateUpdate(changed_keys=changed).SerializeToString()
    state_service_pb2.StateUpdate.FromString(message)
    assert len(frame) < 4 * 1024 * 1024 and len(message) < 4 * 1024 * 1024
    json.loads(json.dumps({key: value}))


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_depth_up_to_the_limit_is_accepted_and_carried(kind: str) -> None:
    state = StateDictionary()
    value = nested(MAX_DEPTH, kind)
    state.update_state(None, DictionaryChange({"k": value}))
    assert state.get("k") == value
    carried_by_every_protocol("k", value)


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_one_level_more_is_refused_naming_key_path_and_limit(kind: str) -> None:
    message = refused({"x": [nested(MAX_DEPTH - 1, kind)]}, key="deep")
    assert "key 'deep'" in message
    assert "value.x[0]" in message
    assert f"limit of {MAX_DEPTH}" in message


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_a_value_nested_100_000_deep_is_refused_without_recursion(kind: str) -> None:
    assert sys.getrecursionlimit() < 100_000
    message = refused(nested(100_000, kind))
    assert f"more than {MAX_DEPTH} containers deep" in message


def test_ints_fit_in_a_double_or_are_refused() -> None:
    largest = 2**MAX_INT_BITS - 1
    state = StateDictionary()
    state.update_state(None, DictionaryChange({"max": largest, "min": -largest}))
    assert state.get("max") == largest and float(largest) < math.inf
    carried_by_every_protocol("max", [largest, -largest])
    for bad in (2**MAX_INT_BITS, -(2**MAX_INT_BITS), 2**1100):
        assert f"over the limit of {MAX_INT_BITS} bits" in refused(bad)
    message = refused({"list": [0, 10**4299]})  # 4,300 digits: repr itself works, barely
    assert f"key 'k': value.list[1]: an int of {(10**4299).bit_length()} bits" in message


def test_an_int_too_long_for_decimal_text_is_refused_with_a_readable_message() -> None:
    message = refused({"a": 7**6000})  # 5,071 digits: repr() of it raises ValueError
    bits = (7**6000).bit_length()
    assert f"key 'k': value.a: an int of {bits} bits is over the limit of 1023 bits" in message


def test_keys_have_a_size_limit_in_utf8_bytes() -> None:
    state = StateDictionary()
    state.update_state(None, DictionaryChange({"k" * MAX_KEY_BYTES: 1}))
    state.update_state(None, DictionaryChange({"é" * (MAX_KEY_BYTES // 2): 1}))
    message = refused(1, key="é" * (MAX_KEY_BYTES // 2) + "x")
    assert f"{MAX_KEY_BYTES + 1} bytes of UTF-8 is over the limit of {MAX_KEY_BYTES}" in message
    assert str(MAX_KEY_BYTES) in refused(1, key="k" * (MAX_KEY_BYTES + 1))


def test_lone_surrogates_are_refused_in_keys_values_and_dict_names() -> None:
    assert "lone surrogate" in refused(1, key="bad \ud800 key")
    assert "key 'k': value[1]: the str holds a lone surrogate" in refused(["ok", "\udc00"])
    assert "key 'k': value.\ud801" in refused({"\ud801": 1})
    assert "key 'k': the top level" in refused("\ud800")
    state = StateDictionary()
    state.update_state(None, DictionaryChange({"emoji \U0001f600": ["é", "\U0001f600"]}))


def test_value_size_is_bounded() -> None:
    state = StateDictionary()
    state.update_state(None, DictionaryChange({"two_mb": "x" * 2_000_000}))
    carried_by_every_protocol("two_mb", state.get("two_mb"))
    assert f"over the limit of {MAX_VALUE_BYTES} bytes" in refused("x" * (MAX_VALUE_BYTES + 1))
    assert "over the limit" in refused([0] * (MAX_VALUE_BYTES // 11 + 1))  # many small items
    assert "over the limit" in refused(["a"] * (MAX_VALUE_BYTES // 16))
    assert "over the limit" in refused({"a": ["é" * (MAX_VALUE_BYTES // 2)]})


def test_a_nanover_selection_of_250000_particles_is_accepted_and_carried() -> None:
    # NanoVer's selections list particle indices: a lab selects whole proteins.
    selection = {
        "key": "selection.u-A.1",
        "name": "everything",
        "selected": {"particle_ids": list(range(250_000))},
        "properties": {"renderer": "ball and stick"},
    }
    state = StateDictionary()
    state.update_state(None, DictionaryChange({"selection.u-A.1": selection}))
    carried_by_every_protocol("selection.u-A.1", selection)
    floats = [i * 0.5 for i in range(250_000)]
    state.update_state(None, DictionaryChange({"floats": floats}))
    carried_by_every_protocol("floats", floats)


def test_limit_errors_travel_as_invalid_argument() -> None:
    with pytest.raises(ValueLimitError) as error:
        checked_copy(nested(40), "k")
    wire = error_to_wire(error.value)
    assert wire["type"] == "ValueLimitError" and wire["status"] == "INVALID_ARGUMENT"


def test_a_bad_dict_name_is_described_even_if_its_repr_would_fail() -> None:
    deep_tuple: Any = ()
    for _ in range(100_000):
        deep_tuple = (deep_tuple,)
    with pytest.raises(TypeError, match="dict keys must be str, got a tuple of 1 items"):
        checked_copy({deep_tuple: 1}, "k")


@pytest.mark.parametrize("huge", [2**1100, 10**5000], ids=["2**1100", "10**5000"])
def test_huge_durations_and_intervals_name_the_field_and_limit(huge: int) -> None:
    state = StateDictionary()
    with pytest.raises(ValueLimitError, match=r"lease on 'k': duration: an int of \d+ bits"):
        state.update_locks("owner", acquire={"k": huge})
    assert state.leases() == []
    with pytest.raises(
        ValueLimitError,
        match=r"interval: an int of \d+ bits is beyond the largest number of seconds",
    ):
        check_interval(huge)


@pytest.mark.parametrize("bad", [2**1100, -1, math.nan, "1"], ids=["2**1100", "-1", "nan", "str"])
async def test_lock_timeouts_are_checked_naming_the_lock(bad: object) -> None:
    table = RWLockTable()
    with pytest.raises(ValueError, match="lock on 'k': timeout"):
        await table.acquire("k", "owner", exclusive=True, timeout=bad)  # type: ignore[arg-type]
    assert table.can_acquire("k", exclusive=True)
    await table.acquire("k", "owner", exclusive=True, timeout=math.inf)  # no limit


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**MAX_INT_BITS) + 1, 2**MAX_INT_BITS - 1)
    | st.floats()
    | st.text()
)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        SCALARS,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=40,
    ),
    st.integers(0, MAX_DEPTH),
)
def test_every_accepted_value_is_carried_by_every_protocol(value: Any, wrap: int) -> None:
    deep = nested(wrap, "list", value)
    try:
        copy = checked_copy(deep, "k")
    except ValueLimitError:
        return  # too deep once wrapped: refusing it is the point
    carried_by_every_protocol("k", copy)
