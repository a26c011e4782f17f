"""Removing keys that hold nothing is no change: no revision, no log entry, no tombstone,
no store write, so a client doing it millions of times costs nothing lasting."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from statehub import DictionaryChange, SQLiteStore, StateDictionary
from statehub.core.buffers import DictionaryChangeMultiView

REMOVALS = 200_000
PER_CHANGE = 100


def remove_missing(state: StateDictionary, start: int = 0) -> None:
    for batch in range(start, start + REMOVALS, PER_CHANGE):
        keys = [f"never-set-{n}" for n in range(batch, batch + PER_CHANGE)]
        assert state.update_state("writer", DictionaryChange(removals=keys)) == state.revision


def test_removing_missing_keys_leaves_no_trace() -> None:
    state = StateDictionary()
    state.update_state("writer", DictionaryChange({"kept": 1}))
    views = state.views
    with state.get_change_buffer() as view:
        assert view.flush_changed_blocking(timeout=5).updates == {"kept": 1}
        remove_missing(state)  # warm up whatever caches the first round fills
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            remove_missing(state, start=REMOVALS)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert state.revision == 1
        assert len(views._log) == 1 and not views._tombstones
        assert len(views.key_facts) == 1
        assert grown < 64 * 1024, f"{REMOVALS} removals of missing keys kept {grown} bytes"
        with pytest.raises(TimeoutError):
            view.flush_changed_blocking(timeout=0.05)  # nothing happened: nothing to see


def test_a_change_keeps_only_the_removals_of_present_keys() -> None:
    state = StateDictionary()
    seen: list[DictionaryChange] = []
    state.content_updated.add_callback(lambda access_token, change: seen.append(change))
    state.update_state("w", DictionaryChange({"a": 1, "b": 2}))
    revision = state.update_state("w", DictionaryChange({"c": 3}, ["a", "missing"]))
    assert revision == 2
    assert seen[-1] == DictionaryChange({"c": 3}, ["a"])
    assert state.views._tombstones == {"a": 2}


def test_removing_missing_keys_bypasses_leases_since_it_changes_nothing() -> None:
    state = StateDictionary()
    state.update_locks("owner", acquire={"reserved": None})
    assert state.update_state("other", DictionaryChange(removals=["reserved"])) == 0
    assert state.revision == 0


def test_multiview_update_ignores_missing_removals() -> None:
    views = DictionaryChangeMultiView()
    views.update({"a": 1})
    views.update(removals=[f"missing{n}" for n in range(10_000)])
    assert views.revision == 1 and not views._tombstones


def test_sqlite_store_writes_nothing_for_missing_removals(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path) as store:
        state = StateDictionary(store=store)
        revision = state.update_state("w", DictionaryChange({"a": 1}))
        state.wait_durable(revision, timeout=10)
        transactions = store.transactions
        for n in range(1_000):
            state.update_state("w", DictionaryChange(removals=[f"missing{n}"]))
        assert store.flush(timeout=10) == revision == 1
        assert store.transactions == transactions
