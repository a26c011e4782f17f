import math

import pytest

from statehub import DictionaryChange, StateDictionary


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**80,
        1.5,
        math.inf,
        -math.inf,
        "",
        "é",
        [],
        {},
        [1, [2.0, {"a": None}]],
    ],
)
def test_json_like_values_keep_their_exact_type(value: object) -> None:
    state = StateDictionary()
    state.update_state(None, DictionaryChange({"k": value}))
    stored = state.get("k")
    assert stored == value
    assert type(stored) is type(value)


def test_nan_is_stored() -> None:
    state = StateDictionary()
    state.update_state(None, DictionaryChange({"k": [math.nan]}))
    stored = state.get("k")
    assert isinstance(stored, list)
    assert math.isnan(stored[0])


def test_int_stays_int_and_bool_stays_bool_inside_containers() -> None:
    state = StateDictionary()
    state.update_state(None, DictionaryChange({"k": {"i": 1, "b": True, "f": 1.0}}))
    stored = state.get("k")
    assert isinstance(stored, dict)
    assert [type(stored[name]) for name in ("i", "b", "f")] == [int, bool, float]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({1, 2}, r"key 'bad': set is not a JSON-like value at the top level"),
        ((1, 2), r"key 'bad': tuple is not a JSON-like value at the top level"),
        ({"a": [1, object()]}, r"key 'bad': object is not a JSON-like value at value\.a\[1\]"),
        ({"a": {3: "x"}}, r"key 'bad': dict keys must be str, got int 3 at value\.a"),
        (bytearray(b"x"), r"key 'bad': bytearray is not a JSON-like value"),
        ({"a": [memoryview(b"x")]}, r"key 'bad': memoryview is not a JSON-like value"),
    ],
)
def test_bad_values_are_refused_naming_key_and_path(value: object, expected: str) -> None:
    state = StateDictionary()
    with pytest.raises(TypeError, match=expected):
        state.update_state(None, DictionaryChange({"good": 1, "bad": value}))
    assert state.copy_content() == {}
    assert state.revision == 0


def test_non_str_key_is_refused_and_nothing_applied() -> None:
    state = StateDictionary()
    with pytest.raises(TypeError, match="keys must be str, got int 5"):
        state.update_state(None, DictionaryChange({"good": 1, 5: "x"}))  # type: ignore[dict-item]
    assert state.copy_content() == {}


def test_state_keeps_private_copies_in_and_out() -> None:
    state = StateDictionary()
    given = {"list": [1, 2]}
    state.update_state(None, DictionaryChange({"k": given}))
    given["list"].append(3)
    assert state.get("k") == {"list": [1, 2]}
    handed_out = state.copy_content()
    handed_out["k"]["list"].append(4)
    assert state.get("k") == {"list": [1, 2]}
    with state.get_change_buffer() as view:
        flushed = view.flush_changed_blocking()
    flushed.updates["k"]["list"].clear()
    assert state.get("k") == {"list": [1, 2]}


def test_bytes_are_values_kept_exactly_at_any_depth() -> None:
    state = StateDictionary()
    packed = bytes(range(256))
    state.update_state(None, DictionaryChange({"top": packed, "nested": {"a": [packed, 1]}}))
    assert state.get("top") == packed and type(state.get("top")) is bytes
    assert state.get("nested") == {"a": [packed, 1]}


@pytest.mark.parametrize("depth", ["top", "few", "many"])
def test_bytes_count_their_length_against_the_value_limit(depth: str) -> None:
    from statehub.core.limits import MAX_VALUE_BYTES
    from statehub.errors import ValueLimitError

    big = b"x" * (MAX_VALUE_BYTES + 1)
    value = {"top": big, "few": [big], "many": [big, *range(100)]}[depth]
    state = StateDictionary()
    with pytest.raises(ValueLimitError, match=f"key 'k': .* over the limit of {MAX_VALUE_BYTES}"):
        state.update_state(None, DictionaryChange({"k": value}))
    assert state.copy_content() == {}


def test_bytes_stand_in_as_base64_where_a_format_has_none() -> None:
    import json

    from statehub.core.values import bytes_as_json, json_default

    assert bytes_as_json(b"\x00\xff") == {"$bytes": "AP8="}
    assert json.dumps({"k": [b"\x00\xff"]}, default=json_default) == '{"k": [{"$bytes": "AP8="}]}'
    with pytest.raises(TypeError, match="set is not a value"):
        json.dumps({1}, default=json_default)


def test_value_size_limits_per_prefix_longest_match_wins() -> None:
    from statehub.core.limits import ValueSizeLimits
    from statehub.errors import ValueLimitError

    limits = ValueSizeLimits(100, (("scene.", 10_000), ("scene.small.", 50)))
    state = StateDictionary(value_limits=limits)
    state.update_state(None, DictionaryChange({"scene.selection": list(range(800))}))
    with pytest.raises(ValueLimitError, match=r"key 'scene\.small\.x': .* limit of 50 bytes"):
        state.update_state(None, DictionaryChange({"scene.small.x": "y" * 51}))
    with pytest.raises(ValueLimitError, match=r"key 'other': .* limit of 100 bytes"):
        state.update_state(None, DictionaryChange({"ok": 1, "other": b"z" * 101}))
    assert set(state.copy_content()) == {"scene.selection"}
    assert limits.largest == 10_000


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_a_value_size_limit_must_be_a_positive_int(bad: object) -> None:
    from statehub.core.limits import ValueSizeLimits

    with pytest.raises(ValueError, match=r"prefix 'p': must be an int >= 1 bytes"):
        ValueSizeLimits(100, (("p", bad),))  # type: ignore[arg-type]
