"""With durability "disk", readers see a change only once it is on disk, so a write that
fails (here SQLite's own "database or disk is full", through ``PRAGMA max_page_count``) is
never seen: not by get, not by a snapshot, not by a subscriber, not over the network."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from statehub import DictionaryChange, DurabilityError, SQLiteStore, StateDictionary, StateServer
from statehub.client import AsyncClient

BIG = "x" * 200_000  # needs new pages: over max_page_count, the write fails


def fill_the_disk(store: SQLiteStore) -> None:
    """From now on, a write that needs one more page of the file fails as a full disk would."""
    with store._db_lock:  # the writer thread's connection: SQLite's own failure path
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "data", durability="disk") as store:
        yield store


def test_a_failed_write_is_never_seen(store: SQLiteStore) -> None:
    state = StateDictionary(store=store)
    state.wait_durable(state.update_state("w", DictionaryChange({"a": 1})), timeout=10)
    with state.get_change_buffer() as view:
        assert view.flush_changed_blocking(timeout=10).updates == {"a": 1}
        fill_the_disk(store)
        revision = state.update_state("w", DictionaryChange({"big": BIG}, ["a"]))
        assert state.get("big") is None and state.get("a") == 1  # not durable: not shown
        with pytest.raises(DurabilityError, match="full"):
            state.wait_durable(revision, timeout=10)
        assert state.copy_content() == {"a": 1}
        assert state.revision == 1
        with pytest.raises(TimeoutError):
            view.flush_changed_blocking(timeout=0.2)  # the subscriber saw nothing
        with state.get_change_buffer() as late:
            assert late.flush_changed_blocking(timeout=10).updates == {"a": 1}
        with pytest.raises(DurabilityError):
            state.update_state("w", DictionaryChange({"b": 2}))  # refused until restart


def test_a_durable_change_is_seen_by_subscribers_without_any_other_event(
    store: SQLiteStore,
) -> None:
    state = StateDictionary(store=store)
    state.wait_durable(state.update_state("w", DictionaryChange({"a": 1})), timeout=10)
    with state.get_change_buffer() as view:
        assert view.flush_changed_blocking(timeout=10).updates == {"a": 1}
        state.update_state("w", DictionaryChange({"a": 2}))  # nobody waits for it
        assert view.flush_changed_blocking(timeout=10).updates == {"a": 2}


def test_removals_see_keys_of_changes_not_yet_durable(store: SQLiteStore) -> None:
    state = StateDictionary(store=store)
    for n in range(200):  # set and removed before the first is on disk, most of the time
        state.update_state("w", DictionaryChange({f"k{n}": n}))
        state.update_state("w", DictionaryChange(removals=[f"k{n}"]))
    state.update_state("w", DictionaryChange({"last": 1}))
    store.flush(timeout=30)
    assert state.copy_content() == {"last": 1}
    assert state.revision == 401


async def test_over_the_network_a_failed_write_is_an_error_and_never_seen(
    store: SQLiteStore,
) -> None:
    server = StateServer(state=StateDictionary(store=store), address="127.0.0.1", port=0)
    async with (
        server,
        AsyncClient("127.0.0.1", server.port, reconnect=False) as writer,
        AsyncClient("127.0.0.1", server.port, reconnect=False) as reader,
    ):
        await writer.set("a", 1)
        stream = reader.subscribe(0)
        assert (await asyncio.wait_for(anext(stream), 10)).updates == {"a": 1}
        fill_the_disk(store)
        with pytest.raises(DurabilityError):
            await writer.set("big", BIG)
        assert await reader.get_all() == {"a": 1}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(stream), 0.3)
        await stream.aclose()
