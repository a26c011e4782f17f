"""The history of each key in one process: what it keeps (count, age, keys), who made
each change, removals and expiry, and SQLite keeping it across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from statehub import DictionaryChange, StateDictionary
from statehub.core.key_history import HistoryRetention, KeyVersion
from statehub.store.sqlite import SQLiteStore
from support.clock import FakeClock


def test_history_is_off_unless_asked_for(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock)
    state.update_state("w", DictionaryChange({"k": 1}))
    assert state.history("k") == [] and state.history_retention.versions == 0


def test_the_last_versions_with_removals_expiry_and_who(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock, history=HistoryRetention(versions=3))
    state.update_state("alice", DictionaryChange({"k": 1}))
    clock.advance(1)
    state.update_state("bob", DictionaryChange({"k": 2}))
    state.update_state("bob", DictionaryChange({}, {"k"}))
    clock.advance(1)
    state.update_state("alice", DictionaryChange({"k": 3}), ttl={"k": 1})
    clock.advance(1)
    assert state.expire_due() == 1
    assert state.history("k") == [
        KeyVersion("k", 3, 1001.0, None, True, "bob"),
        KeyVersion("k", 4, 1002.0, 3, False, "alice"),
        KeyVersion("k", 5, 1003.0, None, True, "EXPIRY"),
    ]
    assert [v.revision for v in state.history("k", limit=2)] == [4, 5]
    assert [v.revision for v in state.history("k", since=4)] == [5]
    assert state.history("k", limit=0) == [] and state.history("other") == []
    with pytest.raises(ValueError, match="limit"):
        state.history("k", limit=-1)


def test_age_and_the_bound_on_keys(clock: FakeClock) -> None:
    retention = HistoryRetention(versions=10, age=5, max_keys=2)
    state = StateDictionary(clock=clock, wall_clock=clock, history=retention)
    state.update_state("w", DictionaryChange({"a": 1}))
    clock.advance(4)
    state.update_state("w", DictionaryChange({"a": 2, "b": 1}))
    clock.advance(2)
    assert [v.value for v in state.history("a")] == [2]  # the first is 6 s old
    state.update_state("w", DictionaryChange({"c": 1}))  # a third key: "a" is forgotten
    assert state.history("a") == [] and [v.value for v in state.history("c")] == [1]
    with pytest.raises(ValueError, match="history versions"):
        HistoryRetention(versions=-1)
    with pytest.raises(ValueError, match="history age"):
        HistoryRetention(versions=1, age=0)


def test_sqlite_keeps_history_across_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    retention = HistoryRetention(versions=2)
    with SQLiteStore(tmp_path) as store:
        state = StateDictionary(store=store, history=retention)
        for value in range(4):
            state.update_state("w", DictionaryChange({"k": value}))
        state.update_state("w", DictionaryChange({"j": 1}))
        last = state.update_state("w", DictionaryChange({}, {"j"}))
        state.wait_durable(last)
        before = {key: state.history(key) for key in ("k", "j")}
    assert [v.value for v in before["k"]] == [2, 3]
    assert [v.removed for v in before["j"]] == [False, True]
    with SQLiteStore(tmp_path) as store:
        state = StateDictionary(store=store, history=retention)
        after = {key: state.history(key) for key in ("k", "j")}
        rows = store._conn.execute("SELECT COUNT(*) FROM history").fetchone()[0]
    assert [(v.revision, v.value, v.removed, v.by) for v in after["k"]] == [
        (v.revision, v.value, v.removed, v.by) for v in before["k"]
    ]
    assert [(v.revision, v.removed) for v in after["j"]] == [(5, False), (6, True)]
    assert rows == 4  # trimmed on disk too


def test_history_hands_out_copies(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock, history=HistoryRetention(versions=2))
    state.update_state("w", DictionaryChange({"k": {"list": [1]}}))
    state.history("k")[0].value["list"].append(2)  # type: ignore[index,union-attr]
    assert state.history("k")[0].value == {"list": [1]}
    assert state.get("k") == {"list": [1]}


def test_per_prefix_retention(tmp_path: Path, clock: FakeClock) -> None:
    retention = HistoryRetention(versions=1, prefixes=(("log.", 3), ("log.noisy.", 0)))
    assert retention.versions_for("log.noisy.x") == 0 and retention.versions_for("a") == 1
    with SQLiteStore(tmp_path, durability="memory") as store:
        state = StateDictionary(store=store, clock=clock, wall_clock=clock, history=retention)
        for value in range(4):
            state.update_state("w", DictionaryChange({"a": value, "log.x": value}))
            state.update_state("w", DictionaryChange({"log.noisy.y": value}))
        kept = {key: [v.value for v in state.history(key)] for key in ("a", "log.x")}
        assert kept == {"a": [3], "log.x": [1, 2, 3]}
        assert state.history("log.noisy.y") == []
    with SQLiteStore(tmp_path, durability="memory") as store:
        again = StateDictionary(store=store, clock=clock, wall_clock=clock, history=retention)
        assert {key: [v.value for v in again.history(key)] for key in kept} == kept
        rows = store._conn.execute("SELECT COUNT(*) FROM history").fetchone()[0]
    assert rows == 4
    with pytest.raises(ValueError, match="prefix 'x'"):
        HistoryRetention(versions=1, prefixes=(("x", -1),))
