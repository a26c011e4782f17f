"""The store interface the server's event-loop code uses: one signature per operation,
whatever the store. Every call that may wait on a shared store returns an ``Answer``: in
at once from an in-process store (memory, SQLite), so a session replies without a task,
with the refusal inside it; the round trip's future from Redis (a real one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statehub import StateServer
from statehub.bench.fleet import RedisProcess
from statehub.core.change import DictionaryChange
from statehub.errors import LockNotOwnedError, ResourceLockedError
from statehub.store.answers import Completed, chained, mapped
from statehub.store.sqlite import SQLiteStore
from statehub.store.state_dictionary import StateDictionary
from support.redis_servers import opened, redis_server, started_state

__all__ = ["redis_server"]  # the fixture, used by name

IN_PROCESS = ["memory", "sqlite"]


@pytest.mark.parametrize("kind", IN_PROCESS)
async def test_an_in_process_store_answers_every_call_at_once(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with opened(kind, request, tmp_path) as state:
        locks = state.store.lock_table()
        written = state.submit_update("w", DictionaryChange({"k": 1}))
        leased = state.submit_lease_change("w", acquire={"k": None})
        listed = state.submit_leases()
        history = state.submit_history("k")
        time_left = state.submit_expiring(["k"])
        free = locks.can_acquire("door", exclusive=True)
        held = locks.held("door", exclusive=True)
        holdings = locks.holdings()
        answers = [written, leased, listed, history, time_left, free, held, holdings]
        assert [answer.done() for answer in answers] == [True] * len(answers)
        assert written.result() == 1
        assert [lease.key for lease in listed.result()] == ["k"]
        assert free.result() is True and held.result() is False and holdings.result() == []
        cleared = state.submit_clear_locks()
        assert cleared.done() and state.leases() == []


@pytest.mark.parametrize("kind", IN_PROCESS)
async def test_an_in_process_refusal_is_the_answer_not_a_raise(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """As from Redis, a refusal comes out of the future: callers handle one shape."""
    async with opened(kind, request, tmp_path) as state:
        await state.submit_lease_change("other", acquire={"k": None})
        refused_write = state.submit_update("w", DictionaryChange({"k": 1}))
        refused_lease = state.submit_lease_change("w", acquire={"k": None})
        refused_unlock = state.store.lock_table().release("door", "w", exclusive=True)
        assert refused_write.done() and refused_lease.done() and refused_unlock.done()
        with pytest.raises(ResourceLockedError, match="'k'"):
            await refused_write
        with pytest.raises(ResourceLockedError, match="'k'"):
            await refused_lease
        with pytest.raises(LockNotOwnedError, match="'door'"):
            await refused_unlock


def test_an_in_process_answer_needs_no_event_loop() -> None:
    """The state dictionary's threads (and a content callback run in one) submit too."""
    state = StateDictionary()
    written = state.submit_update("w", DictionaryChange({"k": 1}))
    seen: list[int] = []
    written.add_done_callback(lambda done: seen.append(done.result()))
    assert seen == [1]  # in at once: its callback ran then, not on a loop's next turn
    assert state.submit_leases().result() == []


async def test_a_redis_store_answers_the_same_calls_after_its_round_trip(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with opened("redis", request, tmp_path) as state:
        locks = state.store.lock_table()
        written = state.submit_update("w", DictionaryChange({"k": 1}))
        leased = state.submit_lease_change("w", acquire={"k": None})
        free = locks.can_acquire("door", exclusive=True)
        refused_unlock = locks.release("door", "w", exclusive=True)
        assert not any(answer.done() for answer in (written, leased, free, refused_unlock))
        assert await written == 1
        await leased
        assert [lease.key for lease in await state.submit_leases()] == ["k"]
        assert await free is True
        with pytest.raises(LockNotOwnedError, match="'door'"):
            await refused_unlock
        with pytest.raises(ResourceLockedError, match="'k'"):
            await state.submit_update("other", DictionaryChange({"k": 2}))


async def test_a_server_takes_the_read_write_locks_of_its_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """No caller picks a lock table to go with a store (the CLI once did, by its type)."""
    server: RedisProcess = request.getfixturevalue("redis_server")
    async with started_state(server.url) as shared:
        assert StateServer(state=shared, port=0).locks is shared.store.lock_table()
    with SQLiteStore(tmp_path / "data") as store:
        durable = StateDictionary(store=store)
        assert StateServer(state=durable, port=0).locks is store.lock_table()


async def test_mapped_and_chained_answers_are_done_at_once_from_done_ones() -> None:
    """A done future's callbacks wait for the loop's next turn: a mapped answer of a done
    one must not, or a session would make a task to reply."""
    assert mapped(Completed(2), lambda n: n * 10).result() == 20
    assert chained(Completed(2), lambda n: Completed(n + 1)).result() == 3
    refused = mapped(Completed(2), lambda n: 1 // 0)
    assert refused.done() and isinstance(refused.exception(), ZeroDivisionError)


async def test_mapped_and_chained_answers_follow_a_pending_one() -> None:
    loop = asyncio.get_running_loop()
    source: asyncio.Future[int] = loop.create_future()
    later: asyncio.Future[int] = loop.create_future()
    doubled = mapped(source, lambda n: n * 2)
    then_later = chained(source, lambda n: later)
    assert not doubled.done() and not then_later.done()
    source.set_result(4)
    assert await doubled == 8
    assert not then_later.done()  # waits for the next step too
    later.set_result(5)
    assert await then_later == 5
    failing: asyncio.Future[int] = loop.create_future()
    failed_map = mapped(failing, lambda n: n)
    failing.set_exception(LookupError("gone"))
    with pytest.raises(LookupError, match="gone"):
        await failed_map
    cancelled: asyncio.Future[int] = loop.create_future()
    cancelled_chain = chained(cancelled, lambda n: Completed(n))
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled_chain
