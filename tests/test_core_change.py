import pytest

from statehub import DictionaryChange


def test_copies_what_it_is_given() -> None:
    updates = {"a": 1}
    removals = {"b"}
    change = DictionaryChange(updates, removals)
    updates["c"] = 2
    removals.add("d")
    assert change.updates == {"a": 1}
    assert change.removals == {"b"}


def test_defaults_are_empty_and_not_shared() -> None:
    first, second = DictionaryChange(), DictionaryChange()
    first.updates["x"] = 1
    assert second.updates == {}
    assert not second


def test_dict_round_trip() -> None:
    change = DictionaryChange({"a": [1, 2]}, ["z", "y"])
    as_dict = change.to_dict()
    assert as_dict == {"updates": {"a": [1, 2]}, "removals": ["y", "z"]}
    assert DictionaryChange.from_dict(as_dict) == change


def test_from_dict_accepts_missing_fields_and_refuses_unknown_ones() -> None:
    assert DictionaryChange.from_dict({}) == DictionaryChange()
    with pytest.raises(ValueError, match="unknown fields \\['update'\\]"):
        DictionaryChange.from_dict({"update": {}})
