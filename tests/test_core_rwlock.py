import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from statehub import LocalState, LockFailedError, LockNotOwnedError, LockUpgradeError, RWLockTable


async def test_many_readers_share() -> None:
    state = LocalState()
    async with state.get_lock("k", exclusive=False):
        assert await state.test_lock("k", exclusive=False)
        assert not await state.test_lock("k", exclusive=True)
        await asyncio.wait_for(_hold_shared(state), 1)


async def _hold_shared(state: LocalState) -> None:
    async with state.get_lock("k", exclusive=False):
        pass


async def test_exclusive_excludes_everyone() -> None:
    state = LocalState()
    async with state.get_lock("k"):
        assert not await state.test_lock("k", exclusive=False)
        timed_out = r"timed out after 0\.01 s waiting for the shared lock"
        with pytest.raises(LockFailedError, match=timed_out):
            await asyncio.create_task(_take(state, "k", exclusive=False, timeout=0.01))
    assert await state.test_lock("k")


async def _take(state: LocalState, key: str, *, exclusive: bool, timeout: float | None) -> None:
    async with state.get_lock(key, exclusive=exclusive, timeout=timeout):
        pass


async def test_test_lock_on_an_unknown_key_is_free() -> None:
    assert await LocalState().test_lock("nothing")


async def test_waiting_writer_goes_before_new_readers_and_readers_go_as_a_batch() -> None:
    table = RWLockTable()
    order: list[str] = []
    await table.acquire("k", "reader0", exclusive=False)

    async def take(owner: str, exclusive: bool) -> None:
        await table.acquire("k", owner, exclusive=exclusive)
        order.append(owner)

    writer = asyncio.create_task(take("writer", True))
    await asyncio.sleep(0)
    readers = [asyncio.create_task(take(f"reader{n}", False)) for n in (1, 2)]
    await asyncio.sleep(0)
    assert order == []  # new readers wait behind the waiting writer
    assert not table.can_acquire("k", exclusive=False)
    table.release("k", "reader0", exclusive=False)
    await writer
    assert order == ["writer"]
    table.release("k", "writer", exclusive=True)
    await asyncio.gather(*readers)
    assert sorted(order[1:]) == ["reader1", "reader2"]


async def test_writers_are_fifo() -> None:
    table = RWLockTable()
    order: list[str] = []
    await table.acquire("k", "first", exclusive=True)

    async def take(owner: str) -> None:
        await table.acquire("k", owner, exclusive=True)
        order.append(owner)
        table.release("k", owner, exclusive=True)

    waiting = []
    for name in ("w1", "w2", "w3"):
        waiting.append(asyncio.create_task(take(name)))
        await asyncio.sleep(0)
    table.release("k", "first", exclusive=True)
    await asyncio.gather(*waiting)
    assert order == ["w1", "w2", "w3"]


async def test_reacquiring_the_same_mode_nests_without_deadlock() -> None:
    state = LocalState()
    async with state.get_lock("k"), state.get_lock("k"):
        assert not await state.test_lock("k")
    async with state.get_lock("k", exclusive=False), state.get_lock("k", exclusive=False):
        pass
    assert await state.test_lock("k")


async def test_shared_reentry_is_granted_even_while_a_writer_waits() -> None:
    table = RWLockTable()
    await table.acquire("k", "reader", exclusive=False)
    writer = asyncio.create_task(table.acquire("k", "writer", exclusive=True))
    await asyncio.sleep(0)
    await asyncio.wait_for(table.acquire("k", "reader", exclusive=False), 1)
    table.release("k", "reader", exclusive=False)
    table.release("k", "reader", exclusive=False)
    await asyncio.wait_for(writer, 1)


async def test_write_then_read_is_allowed() -> None:
    state = LocalState()
    async with state.get_lock("k"), state.get_lock("k", exclusive=False):
        pass
    assert await state.test_lock("k")


async def test_upgrading_shared_to_exclusive_is_an_error() -> None:
    state = LocalState()
    async with state.get_lock("k", exclusive=False):
        with pytest.raises(LockUpgradeError, match="cannot take 'k' exclusively"):
            async with state.get_lock("k"):
                pass
    assert await state.test_lock("k")


async def test_cancelled_waiter_leaves_no_trace_and_the_lock_passes_on() -> None:
    table = RWLockTable()
    await table.acquire("k", "holder", exclusive=True)
    cancelled = asyncio.create_task(table.acquire("k", "cancelled", exclusive=True))
    later = asyncio.create_task(table.acquire("k", "later", exclusive=True))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    table.release("k", "holder", exclusive=True)
    await asyncio.wait_for(later, 1)
    with pytest.raises(LockNotOwnedError):
        table.release("k", "cancelled", exclusive=True)
    table.release("k", "later", exclusive=True)
    assert table.can_acquire("k", exclusive=True)


async def test_cancelled_waiting_writer_lets_blocked_readers_in() -> None:
    table = RWLockTable()
    await table.acquire("k", "reader0", exclusive=False)
    writer = asyncio.create_task(table.acquire("k", "writer", exclusive=True))
    await asyncio.sleep(0)
    reader = asyncio.create_task(table.acquire("k", "reader1", exclusive=False))
    await asyncio.sleep(0)
    assert not reader.done()
    writer.cancel()
    await asyncio.wait_for(reader, 1)


async def test_cancelled_after_grant_releases_the_grant() -> None:
    table = RWLockTable()
    await table.acquire("k", "holder", exclusive=True)
    waiter = asyncio.create_task(table.acquire("k", "waiter", exclusive=True))
    await asyncio.sleep(0)
    table.release("k", "holder", exclusive=True)  # grants to waiter, which has not run yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert table.can_acquire("k", exclusive=True)


async def test_release_by_non_owner_raises() -> None:
    table = RWLockTable()
    await table.acquire("k", "a", exclusive=True)
    with pytest.raises(LockNotOwnedError, match="exclusive lock on 'k' is not held"):
        table.release("k", "b", exclusive=True)
    with pytest.raises(LockNotOwnedError, match="shared lock on 'k' is not held"):
        table.release("k", "a", exclusive=False)


async def test_release_owner_frees_everything_it_held() -> None:
    table = RWLockTable()
    await table.acquire("x", "session", exclusive=True)
    await table.acquire("y", "session", exclusive=False)
    waiting = asyncio.create_task(table.acquire("x", "other", exclusive=True))
    await asyncio.sleep(0)
    table.release_owner("session")
    await asyncio.wait_for(waiting, 1)
    assert table.can_acquire("y", exclusive=True)


async def test_timeout_on_exclusive_lock_raises_lock_failed_and_leaves_no_trace() -> None:
    state = LocalState()
    async with state.get_lock("k", exclusive=False):
        with pytest.raises(LockFailedError, match="exclusive lock on 'k'"):
            await asyncio.create_task(_take(state, "k", exclusive=True, timeout=0.01))
        assert await state.test_lock("k", exclusive=False)  # no writer left waiting


async def _queue_reader_then_writer(
    table: RWLockTable, order: list[str]
) -> list[asyncio.Task[None]]:
    async def take(owner: str, exclusive: bool) -> None:
        await table.acquire("k", owner, exclusive=exclusive)
        order.append(owner)

    await table.acquire("k", "writer0", exclusive=True)
    tasks = [asyncio.create_task(take("reader", False))]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(take("writer1", True)))
    await asyncio.sleep(0)
    table.release("k", "writer0", exclusive=True)
    await asyncio.sleep(0)
    return tasks


async def test_writer_preference_lets_a_later_writer_overtake_a_waiting_reader() -> None:
    table = RWLockTable()
    order: list[str] = []
    tasks = await _queue_reader_then_writer(table, order)
    assert order == ["writer1"]
    table.release("k", "writer1", exclusive=True)
    await asyncio.gather(*tasks)
    assert order == ["writer1", "reader"]


async def test_fair_mode_lets_readers_that_waited_first_go_first() -> None:
    table = RWLockTable(fair=True)
    order: list[str] = []
    tasks = await _queue_reader_then_writer(table, order)
    assert order == ["reader"]
    table.release("k", "reader", exclusive=False)
    await asyncio.gather(*tasks)
    assert order == ["reader", "writer1"]


@pytest.mark.parametrize("exclusive", [True, False])
async def test_release_right_after_a_waiter_is_cancelled_skips_it(exclusive: bool) -> None:
    table = RWLockTable()
    await table.acquire("k", "holder", exclusive=True)
    waiter = asyncio.create_task(table.acquire("k", "waiter", exclusive=exclusive))
    await asyncio.sleep(0)
    waiter.cancel()  # its future is cancelled now; the task has not run its cleanup yet
    table.release("k", "holder", exclusive=True)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert table.can_acquire("k", exclusive=True)


async def test_a_cancelled_waiting_writer_stops_holding_off_readers_at_once() -> None:
    table = RWLockTable()
    await table.acquire("k", "reader", exclusive=False)
    writer = asyncio.create_task(table.acquire("k", "writer", exclusive=True))
    await asyncio.sleep(0)
    assert not table.can_acquire("k", exclusive=False)
    writer.cancel()  # before the writer's task has run its own cleanup
    assert table.can_acquire("k", exclusive=False)
    with pytest.raises(asyncio.CancelledError):
        await writer


async def test_a_request_takes_its_place_when_made_not_when_awaited() -> None:
    table = RWLockTable()
    await table.acquire("k", "reader", exclusive=False)
    first = table.acquire("k", "writer1", exclusive=True)
    assert not table.can_acquire("k", exclusive=False)  # a writer waits already
    second = table.acquire("k", "writer2", exclusive=True)
    order: list[str] = []

    async def take(acquisition: Coroutine[Any, Any, int], owner: str) -> None:
        await acquisition
        order.append(owner)
        table.release("k", owner, exclusive=True)

    tasks = [
        asyncio.create_task(take(second, "writer2")),
        asyncio.create_task(take(first, "writer1")),
    ]
    table.release("k", "reader", exclusive=False)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["writer1", "writer2"]  # the order asked in, not the order awaited in


@pytest.mark.parametrize("granted_at_once", [True, False])
async def test_a_request_cancelled_before_its_task_ran_leaves_no_trace(
    granted_at_once: bool,
) -> None:
    table = RWLockTable()
    if not granted_at_once:
        await table.acquire("k", "holder", exclusive=True)
    task = asyncio.create_task(table.acquire("k", "waiter", exclusive=True))
    task.cancel()  # before its first step: the coroutine's body never runs
    with pytest.raises(asyncio.CancelledError):
        await task
    if not granted_at_once:
        table.release("k", "holder", exclusive=True)
    await asyncio.sleep(0)  # the withdrawn waiter's callback
    assert table.can_acquire("k", exclusive=True)
    assert table.counts() == (0, 0)


async def test_a_request_never_awaited_is_withdrawn_when_closed() -> None:
    table = RWLockTable()
    await table.acquire("k", "holder", exclusive=True)
    abandoned = table.acquire("k", "waiter", exclusive=True)
    assert table.counts() == (1, 1)
    abandoned.close()
    await asyncio.sleep(0)
    assert table.counts() == (1, 0)
