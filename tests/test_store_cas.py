"""Compare-and-set and per-key facts on every store: memory, SQLite, Redis (a real one)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from statehub.bench.fleet import RedisProcess
from statehub.core.change import DictionaryChange
from statehub.core.entries import Entry
from statehub.errors import ConflictError, ResourceLockedError
from statehub.store.sqlite import DATA_FILE, SQLiteStore
from statehub.store.state_dictionary import StateDictionary
from support.polling import eventually
from support.raw_session import GatedStore
from support.redis_servers import opened, redis_server, started_state

__all__ = ["redis_server"]  # the fixture, used by name

STORES = ["memory", "sqlite", "redis"]


async def update(
    state: StateDictionary,
    updates: dict[str, object] | None = None,
    removals: list[str] | None = None,
    expect: dict[str, int | None] | None = None,
) -> int:
    """One update, acknowledged as a server does: once durable (and shown to readers)."""
    change = DictionaryChange(updates, removals)
    revision = await state.update_state_async("w", change, expect=expect)
    await state.wait_durable_async(revision)
    return revision


@pytest.mark.parametrize("kind", STORES)
async def test_if_absent_creates_once(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with opened(kind, request, tmp_path) as state:
        first = await update(state, {"k": 1}, expect={"k": None})
        with pytest.raises(ConflictError) as caught:
            await update(state, {"k": 2}, expect={"k": None})
        assert str(caught.value) == (
            f"compare-and-set failed, nothing applied: 'k' is at revision {first} (expected absent)"
        )
        assert caught.value.current == {"k": first}
        assert state.get("k") == 1 and state.revision == first


@pytest.mark.parametrize("kind", STORES)
async def test_if_revision_applies_only_on_the_expected_revision(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with opened(kind, request, tmp_path) as state:
        first = await update(state, {"k": 1})
        second = await update(state, {"k": 2}, expect={"k": first})
        assert second == first + 1
        with pytest.raises(ConflictError, match=rf"'k' is at revision {second} \(expected "):
            await update(state, {"k": 3}, expect={"k": first})  # a stale read
        assert state.get("k") == 2 and state.revision == second
        with pytest.raises(ConflictError, match=r"'new' is absent \(expected revision 1\)"):
            await update(state, {"new": 3}, expect={"new": 1})


@pytest.mark.parametrize("kind", STORES)
async def test_one_failed_expectation_applies_nothing_and_names_only_the_failures(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with opened(kind, request, tmp_path) as state:
        a = await update(state, {"a": 1, "b": 1})
        with pytest.raises(ConflictError) as caught:
            await update(
                state,
                {"a": 2, "b": 2, "c": 2},
                ["gone"],
                expect={"a": a, "b": a + 5, "c": 9, "gone": None},
            )
        assert caught.value.current == {"b": a, "c": None}
        assert "'b' is at revision" in str(caught.value) and "'c' is absent" in str(caught.value)
        assert "'a'" not in str(caught.value)
        assert state.copy_content() == {"a": 1, "b": 1} and state.revision == a


@pytest.mark.parametrize("kind", STORES)
async def test_conditional_removal(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with opened(kind, request, tmp_path) as state:
        made = await update(state, {"k": 1})
        with pytest.raises(ConflictError):
            await update(state, removals=["k"], expect={"k": made + 1})
        removed = await update(state, removals=["k"], expect={"k": made})
        assert removed == made + 1 and state.get("k") is None
        # Removing an absent key that is expected absent: holds, and changes nothing.
        assert await update(state, removals=["k"], expect={"k": None}) == removed
        assert state.revision == removed
        with pytest.raises(ConflictError, match="'k' is absent"):
            await update(state, removals=["k"], expect={"k": made})


@pytest.mark.parametrize("kind", STORES)
async def test_a_lease_refuses_before_expectations_are_looked_at(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with opened(kind, request, tmp_path) as state:
        made = await update(state, {"k": 1})
        await state.submit_lease_change("other", acquire={"k": None})
        with pytest.raises(ResourceLockedError):
            await update(state, {"k": 2}, expect={"k": made})
        with pytest.raises(ResourceLockedError):
            await update(state, {"k": 2}, expect={"k": made + 7})


@pytest.mark.parametrize("kind", STORES)
async def test_facts_follow_etcd(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    async with opened(kind, request, tmp_path) as state:
        created = await update(state, {"k": 1, "other": 0})
        changed = await update(state, {"k": 2})
        again = await update(state, {"k": 2})  # the same value is a change too, as in etcd
        assert state.entry("k") == Entry("k", 2, again, created, 3)
        assert state.entry("other") == Entry("other", 0, created, created, 1)
        assert changed == created + 1
        removed = await update(state, removals=["k"])
        assert state.entry("k") is None
        recreated = await update(state, {"k": "new"})
        assert recreated == removed + 1
        assert state.entry("k") == Entry("k", "new", recreated, recreated, 1)
        revision, values, facts = state.shared_entries(prefix="k")
        assert (revision, values, facts) == (
            recreated,
            {"k": "new"},
            {"k": (recreated, recreated, 1)},
        )


@pytest.mark.parametrize("kind", STORES)
async def test_bad_expectations_are_clear_errors(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with opened(kind, request, tmp_path) as state:
        await update(state, {"k": 1})
        with pytest.raises(ValueError, match="'elsewhere', which the update neither sets"):
            await update(state, {"k": 2}, expect={"elsewhere": None})
        with pytest.raises(ValueError, match="must be >= 1"):
            await update(state, {"k": 2}, expect={"k": 0})
        with pytest.raises(TypeError, match="must be an int or None"):
            await update(state, {"k": 2}, expect={"k": "1"})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="must be an int or None"):
            await update(state, {"k": 2}, expect={"k": True})
        assert state.get("k") == 1


def test_expectations_see_changes_not_yet_shown_to_readers() -> None:
    store = GatedStore()  # changes become durable, and shown, only when the test says
    state = StateDictionary(store=store)
    first = state.update_state("w", DictionaryChange({"k": 1}), expect={"k": None})
    assert state.get("k") is None  # not shown yet
    with pytest.raises(ConflictError, match=f"'k' is at revision {first}"):
        state.update_state("w", DictionaryChange({"k": 9}), expect={"k": None})
    second = state.update_state("w", DictionaryChange(removals=["k"]), expect={"k": first})
    with pytest.raises(ConflictError, match="'k' is absent"):
        state.update_state("w", DictionaryChange({"k": 9}), expect={"k": first})
    store.make_durable(second)
    assert state.get("k") is None and state.entry("k") is None


def random_history(state: StateDictionary, steps: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(steps):
        keys = rng.sample([f"k{i}" for i in range(8)], rng.randint(1, 3))
        updates = {key: rng.randint(0, 9) for key in keys if rng.random() < 0.7}
        removals = [key for key in keys if key not in updates]
        state.update_state("w", DictionaryChange(updates, removals))


@pytest.mark.parametrize("durability", ["disk", "memory"])
def test_sqlite_keeps_the_facts_across_restarts(tmp_path: Path, durability: str) -> None:
    # Without waiting for the disk, many changes go in one transaction: removals and
    # re-creations of a key inside one batch must leave its facts as one at a time does.
    with SQLiteStore(tmp_path, durability=durability) as store:  # type: ignore[arg-type]
        state = StateDictionary(store=store)
        random_history(state, 3000, seed=7)
        store.flush(30)
        before = state.shared_entries()
        assert store.transactions < 3000  # some batches held several changes
    with SQLiteStore(tmp_path) as store:
        after = StateDictionary(store=store).shared_entries()
    assert after == before
    assert any(facts[2] > 1 for facts in after[2].values())


def test_a_version_1_data_file_gets_facts(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path) as store:
        StateDictionary(store=store).update_state("w", DictionaryChange({"a": 1, "b": 2}))
    with sqlite3.connect(tmp_path / DATA_FILE) as conn:  # as statehub 0.1 wrote it
        conn.executescript(
            "ALTER TABLE state DROP COLUMN mod_revision; "
            "ALTER TABLE state DROP COLUMN create_revision; "
            "ALTER TABLE state DROP COLUMN version; PRAGMA user_version = 1;"
        )
    conn.close()
    with SQLiteStore(tmp_path) as store:
        state = StateDictionary(store=store)
        at = state.revision
        assert state.entry("a") == Entry("a", 1, at, at, 1)
        changed = state.update_state("w", DictionaryChange({"a": 3}), expect={"a": at})
        state.wait_durable(changed, 10)
        assert state.entry("a") == Entry("a", 3, changed, at, 2)
    with SQLiteStore(tmp_path) as store:
        assert StateDictionary(store=store).entry("a") == Entry("a", 3, changed, at, 2)


async def test_redis_servers_agree_on_facts_and_a_new_one_loads_them(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        made = await update(a, {"k": 1, "j": 1})
        await eventually(lambda: b.revision == made)
        changed = await update(b, {"k": 2}, expect={"k": made})  # read on a, written on b
        with pytest.raises(ConflictError, match=f"'k' is at revision {changed}"):
            await update(a, {"k": 3}, expect={"k": made})
        await update(a, removals=["j"])
        recreated = await update(b, {"j": 5}, expect={"j": None})
        await eventually(lambda: a.revision == recreated)
        assert a.shared_entries() == b.shared_entries()
        async with started_state(redis_server.url) as c:
            assert c.shared_entries() == a.shared_entries()
            assert c.entry("k") == Entry("k", 2, changed, made, 2)
            assert c.entry("j") == Entry("j", 5, recreated, recreated, 1)


async def test_redis_fills_in_facts_for_keys_written_before_they_were_kept(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url) as a:
        made = await update(a, {"k": 1})
        await update(a, {"j": 1})
    import redis

    with redis.Redis(port=redis_server.port) as client:
        client.delete("{statehub}:facts")  # as an older statehub left it
    async with started_state(redis_server.url) as b:
        at = b.revision
        assert b.entry("k") == Entry("k", 1, at, at, 1)
        changed = await update(b, {"k": 2}, expect={"k": at})
        assert b.entry("k") == Entry("k", 2, changed, at, 2)
        assert made < at


@pytest.mark.parametrize("kind", STORES)
async def test_of_many_concurrent_creates_exactly_one_wins(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Over Redis these go in one batch (one script call), each checked on its own.
    async with opened(kind, request, tmp_path) as state:
        outcomes = await asyncio.gather(
            *(update(state, {"k": i, f"other{i}": i}, expect={"k": None}) for i in range(10)),
            return_exceptions=True,
        )
        won = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, int)]
        lost = [outcome for outcome in outcomes if isinstance(outcome, ConflictError)]
        assert len(won) == 1 and len(lost) == 9
        revision = outcomes[won[0]]
        assert all(error.current == {"k": revision} for error in lost)
        assert state.copy_content() == {"k": won[0], f"other{won[0]}": won[0]}
        assert state.revision == revision
