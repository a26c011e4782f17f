"""The Redis store against a real redis-server: several stores (servers) over one Redis."""

from __future__ import annotations

import asyncio
import math

import pytest
import redis

from statehub.bench.fleet import RedisProcess
from statehub.core.change import DictionaryChange
from statehub.errors import (
    DurabilityError,
    LockFailedError,
    LockNotOwnedError,
    LockUpgradeError,
    ResourceLockedError,
    StoreUnavailableError,
)
from statehub.store.redis import RedisStore
from statehub.store.redis_connection import RedisTarget
from statehub.store.redis_locks import RedisLockTable
from statehub.store.state_dictionary import StateDictionary
from support.polling import eventually
from support.redis_servers import FAST_LIVENESS, redis_server, started_state

__all__ = ["redis_server"]  # the fixture, used by name

VALUE = {"int": 1, "float": 1.0, "big": 2**80, "nan": math.nan, "list": [None, True, "s", -2]}


def change(**updates: object) -> DictionaryChange:
    return DictionaryChange(updates)


async def test_values_keep_their_types_across_servers(redis_server: RedisProcess) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        revision = await a.update_state_async("writer", change(v=VALUE, s="x"))
        assert revision == 1 and a.get("s") == "x"  # read your writes, at once
        await eventually(lambda: b.revision == 1)
        got = b.get("v")
        assert type(got["int"]) is int and type(got["float"]) is float
        assert got["big"] == 2**80 and math.isnan(got["nan"])
        assert got["list"] == [None, True, "s", -2]
        removed = await b.update_state_async("writer", DictionaryChange(removals=["s"]))
        assert removed == 2
        await eventually(lambda: a.revision == 2)
        assert "s" not in a.copy_content()


async def test_concurrent_writers_on_two_servers_share_one_revision_sequence(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        views = [a.get_change_buffer(), b.get_change_buffer()]
        buffers = [view.__enter__() for view in views]
        try:
            writes = [
                state.update_state_async(f"w{i % 4}", change(**{f"k{i % 7}": i}))
                for i in range(200)
                for state in (a, b)
            ]
            revisions = await asyncio.gather(*writes)
            assert sorted(revisions) == list(range(1, 401))  # each revision handed out once
            await eventually(lambda: a.revision == b.revision == 400)
            assert a.copy_content() == b.copy_content()
            stored = redis.Redis(port=redis_server.port)
            assert int(stored.get("{statehub}:revision") or 0) == 400
            stored.close()
            for buffer, state in zip(buffers, (a, b), strict=True):
                flushed = buffer.flush_changed_blocking(timeout=5)
                assert flushed.updates == state.copy_content()
                assert buffer.cursor == 400
        finally:
            for view in views:
                view.__exit__(None, None, None)


async def test_removing_keys_that_hold_nothing_costs_no_revision(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        assert await a.update_state_async("w", change(k=1)) == 1
        nothing = DictionaryChange(removals=["missing"])
        assert await a.update_state_async("w", nothing) == 1
        assert a.update_state("w", nothing) == 1  # the blocking path too
        b.update_locks("other", acquire={"missing": None, "k": None})
        assert await a.update_state_async("w", nothing) == 1  # no change: no lease matters
        b.update_locks("other", release=["missing", "k"])
        with b.get_change_buffer(since=1) as view:
            revision = await a.update_state_async("w", DictionaryChange({"n": 2}, ["k", "gone"]))
            assert revision == 2
            await eventually(lambda: b.revision == 2)
            seen = view.flush_changed_blocking(timeout=5)
            assert seen.updates == {"n": 2} and set(seen.removals) == {"k"}
        stored = redis.Redis(port=redis_server.port)
        assert int(stored.get("{statehub}:revision") or 0) == 2
        assert stored.xlen("{statehub}:history") == 2
        stored.close()
        assert a.copy_content() == b.copy_content() == {"n": 2}


async def test_a_commit_reads_the_gap_before_it_when_the_follower_is_away(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        following = a.store._tasks  # type: ignore[attr-defined]
        for task in following:  # a stops following (and beating): only its commits move it
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)
        await b.update_state_async("other", change(first=1))
        writes = [a.update_state_async("me", change(**{f"k{n}": n})) for n in range(5)]
        assert sorted(await asyncio.gather(*writes)) == [2, 3, 4, 5, 6]
        assert a.copy_content() == {"first": 1, **{f"k{n}": n for n in range(5)}}


async def test_the_blocking_path_commits_too(redis_server: RedisProcess) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        await b.update_state_async("other", change(first=1))
        assert a.update_state("me", change(second=2)) == 2
        assert a.copy_content() == {"first": 1, "second": 2}  # the gap was read at once


async def test_a_lease_through_one_server_blocks_writers_on_another(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        a.update_locks("alice", acquire={"k": None, "short": 0.3})
        with pytest.raises(ResourceLockedError, match="'k'") as refused:
            await b.update_state_async("bob", change(k=1, free=1))
        assert refused.value.keys == frozenset({"k"})  # type: ignore[attr-defined]
        assert "free" not in b.copy_content()  # nothing of the refused change applied
        with pytest.raises(ResourceLockedError, match="'k'"):
            b.update_locks("bob", acquire={"k": 1.0})
        assert {(lease.key, lease.owner) for lease in b.leases()} == {
            ("k", "alice"),
            ("short", "alice"),
        }
        assert await b.update_state_async("alice", change(k=2)) == 1  # same token, any server

        async def short_lease_expired() -> bool:
            try:
                await b.update_state_async("bob", change(short=1))
            except ResourceLockedError:
                return False
            return True

        # Redis's clock decides expiry
        await eventually(short_lease_expired, "the short lease expired by Redis's clock")
        a.release_owner("alice")  # queued: a session ending cannot wait
        await eventually(lambda: b.leases() == [])
        assert await b.update_state_async("bob", change(k=3)) == 3


async def test_release_owner_releases_only_what_came_through_this_server(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        a.update_locks("token", acquire={"via-a": None})
        b.update_locks("token", acquire={"via-b": None})
        b.update_locks("other", acquire={"other": None})
        a.release_owner("token")
        await a.store.ordered.drain()  # type: ignore[attr-defined]
        assert [lease.key for lease in b.leases()] == ["other", "via-b"]


async def test_a_dead_servers_leases_and_locks_are_swept(redis_server: RedisProcess) -> None:
    async with started_state(redis_server.url) as survivor:
        dead_store = RedisStore(redis_server.url, **FAST_LIVENESS)
        dead = StateDictionary(store=dead_store)
        await dead.start()
        locks = dead_store.lock_table()
        try:
            dead.update_locks("ghost", acquire={"held": None})
            await locks.acquire("L", "ghost-task", exclusive=True)
            survivor.update_locks("alive", acquire={"mine": None})
            for task in dead_store._tasks:  # it stops beating, as a killed process would
                task.cancel()
            await eventually(lambda: [lease.key for lease in survivor.leases()] == ["mine"])
            survivor_locks = survivor._store.lock_table()  # type: ignore[attr-defined]
            fence = await survivor_locks.acquire("L", "next", exclusive=True, timeout=10)
            assert fence > 0
        finally:
            await dead.stop()
            dead_store.close()


async def test_flushall_starts_a_new_epoch_and_every_server_restarts(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        await a.update_state_async("w", change(x=1, y=2))
        await eventually(lambda: b.revision == 1)
        old_epoch = b.epoch
        resets = asyncio.Event()
        b.history_reset.add_callback(resets.set)
        with b.get_change_buffer() as view:
            client = redis.Redis(port=redis_server.port)
            client.flushall()
            client.close()
            await asyncio.wait_for(resets.wait(), 10)
            assert b.epoch != old_epoch and b.revision == 0 and b.copy_content() == {}
            assert view.frozen  # its subscription ends; the client starts again
        assert await a.update_state_async("w", change(z=3)) == 1
        await eventually(lambda: b.revision == 1)
        assert a.epoch == b.epoch and b.copy_content() == {"z": 3}


async def test_resuming_on_another_server_gets_the_missed_changes(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        for i in range(10):
            await a.update_state_async("w", change(**{f"k{i % 3}": i}))
        await eventually(lambda: b.revision == 10)
        with b.get_change_buffer(since=7) as view:
            assert not view.starts_with_snapshot
            assert view.flush_changed_blocking(timeout=1).updates == {"k1": 7, "k2": 8, "k0": 9}
        async with started_state(redis_server.url) as late:  # loaded at revision 10
            with late.get_change_buffer(since=7) as view:
                assert view.starts_with_snapshot  # it never saw revision 7: no gap, a snapshot
                assert view.flush_changed_blocking(timeout=1).updates == a.copy_content()


async def test_a_server_behind_the_kept_history_restarts_from_a_snapshot(
    redis_server: RedisProcess,
) -> None:
    async with started_state(redis_server.url, history_length=5) as a:
        behind_store = RedisStore(redis_server.url, history_length=5, **FAST_LIVENESS)
        behind = StateDictionary(store=behind_store)  # not started: it follows nothing
        resets = asyncio.Event()
        behind.history_reset.add_callback(resets.set)
        try:
            for i in range(20):
                await a.update_state_async("w", change(**{f"k{i}": i}))
            behind.update_state("w", change(last=True))  # catching up finds a hole
            assert resets.is_set()
            assert behind.revision == 21 and behind.copy_content() == a.copy_content() | {
                "last": True
            }
        finally:
            behind_store.close()


async def test_writes_are_refused_clearly_while_redis_is_away(tmp_path: object) -> None:
    from pathlib import Path

    from statehub.bench.fleet import restart_redis, start_redis, stop

    server = start_redis(Path(str(tmp_path)) / "redis", aof_always=True)
    try:
        async with started_state(server.url) as state:
            await state.update_state_async("w", change(x=1))
            server.process.kill()
            server.process.wait()
            with pytest.raises(StoreUnavailableError, match="unreachable"):
                await state.update_state_async("w", change(x=2))
            assert state.get("x") == 1  # reads still answered from the mirror
            server = restart_redis(server)

            async def committed() -> int | None:
                try:
                    return await state.update_state_async("w", change(x=3))
                except StoreUnavailableError:  # the follower reconnects with backoff
                    return None

            assert await eventually(committed, "a commit after the restart", timeout=20) == 2
            assert state.copy_content() == {"x": 3}
    finally:
        stop(server.process)


# -- read/write locks across servers ---------------------------------------------------


async def test_rw_locks_across_servers(redis_server: RedisProcess) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        locks_a = a._store.lock_table()  # type: ignore[attr-defined]
        locks_b = b._store.lock_table()  # type: ignore[attr-defined]
        first = await locks_a.acquire("R", "reader1", exclusive=False)
        second = await locks_b.acquire("R", "reader2", exclusive=False)
        assert second > first  # fencing tokens grow across servers
        assert await locks_b.can_acquire("R", exclusive=False)
        assert not await locks_b.can_acquire("R", exclusive=True)
        with pytest.raises(LockUpgradeError):
            await locks_a.acquire("R", "reader1", exclusive=True)
        with pytest.raises(
            LockFailedError, match=r"timed out after 0\.2 s .* exclusive lock on 'R'"
        ):
            await locks_b.acquire("R", "writer", exclusive=True, timeout=0.2)
        assert await locks_a.can_acquire("R", exclusive=False)  # the timed-out writer left no trace

        order: list[str] = []

        async def take(table: object, owner: str, exclusive: bool) -> None:
            await table.acquire("R", owner, exclusive=exclusive)  # type: ignore[attr-defined]
            order.append(owner)

        writer1 = asyncio.create_task(take(locks_b, "writer1", True))
        await eventually(lambda: _shared_refused(locks_a, "R"), "a writer waiting on R")
        writer2 = asyncio.create_task(take(locks_a, "writer2", True))
        late_reader = asyncio.create_task(take(locks_a, "late-reader", False))

        async def three_waiting() -> bool:
            return any(held.key == "R" and held.waiting == 3 for held in await locks_a.holdings())

        await eventually(three_waiting, "both writers and the late reader queued on R")
        assert order == []  # readers hold it; the late reader waits behind the writers
        await locks_a.release("R", "reader1", exclusive=False)
        await locks_b.release("R", "reader2", exclusive=False)
        await asyncio.wait_for(writer1, 10)
        assert order == ["writer1"]
        await locks_b.release("R", "writer1", exclusive=True)
        await asyncio.wait_for(writer2, 10)
        await locks_a.release("R", "writer2", exclusive=True)
        await asyncio.wait_for(late_reader, 10)
        assert order == ["writer1", "writer2", "late-reader"]  # FIFO writers, then readers
        with pytest.raises(LockNotOwnedError):
            await locks_b.release("R", "late-reader", exclusive=True)
        locks_a.release_owner("late-reader")  # queued before the test below: done first
        assert await locks_a.can_acquire("R", exclusive=True)


async def test_a_cancelled_lock_wait_leaves_no_trace(redis_server: RedisProcess) -> None:
    async with started_state(redis_server.url) as a, started_state(redis_server.url) as b:
        locks_a = a._store.lock_table()  # type: ignore[attr-defined]
        locks_b = b._store.lock_table()  # type: ignore[attr-defined]
        await locks_a.acquire("L", "holder", exclusive=False)
        waiting = asyncio.create_task(locks_b.acquire("L", "writer", exclusive=True))
        await eventually(lambda: _shared_refused(locks_a, "L"), "a writer waiting on L")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await locks_b.can_acquire("L", exclusive=False)  # withdrawn in order on b
        await locks_a.release("L", "holder", exclusive=False)
        assert await locks_b.can_acquire("L", exclusive=True)


def test_redis_urls_are_checked() -> None:
    sentinel = RedisTarget.parse("redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2")
    assert sentinel.sentinels == [("h1", 26379), ("h2", 26380)]
    assert (sentinel.service, sentinel.db, sentinel.password) == ("mymaster", 2, "pw")
    assert "pw" not in sentinel.describe()
    for bad, message in [
        ("http://h:1", "unknown scheme 'http'"),
        ("redis+sentinel:///mymaster", "no Sentinel host:port"),
        ("redis+sentinel://h:1/", "path must be"),
        ("redis+sentinel://h:x/m", "is not host:port"),
    ]:
        with pytest.raises(ValueError, match=message):
            RedisTarget.parse(bad)


def test_an_unreachable_redis_is_a_clear_error() -> None:
    from statehub.bench.fleet import free_port

    with pytest.raises(StoreUnavailableError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        RedisStore(f"redis://127.0.0.1:{free_port()}/0")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--store", "http://h:1"], "unknown scheme 'http'"),
        (["--store", "redis://127.0.0.1:{free}/0"], "cannot reach Redis at redis://127.0.0.1"),
        (["--store", "redis://127.0.0.1:1/0", "--data", "somewhere"], "exclude each other"),
        (["--replicas", "1"], "--replicas needs --store"),
    ],
)
def test_serve_refuses_a_bad_store_clearly(arguments: list[str], message: str) -> None:
    import subprocess

    from statehub.bench.fleet import SERVE, free_port

    filled = [argument.replace("{free}", str(free_port())) for argument in arguments]
    finished = subprocess.run(
        [*SERVE, "--port", "0", *filled], capture_output=True, text=True, timeout=60
    )
    assert finished.returncode != 0
    assert message in finished.stderr


async def test_a_primary_with_too_few_replicas_says_why_nothing_is_acknowledged(
    redis_server: RedisProcess,
) -> None:
    # As after a failover with --replicas 1 and one replica: the new primary has none.
    async with started_state(redis_server.url, replicas=1, replica_timeout=0.1) as state:
        with pytest.raises(DurabilityError, match=r"0 replicas connected.*run at least 2"):
            await state.update_state_async("w", change(x=1))
        assert state.get("x") == 1  # committed on the primary all the same


async def _shared_refused(locks: RedisLockTable, key: str) -> bool:
    """Whether a shared hold of ``key`` would have to wait (a writer is queued first)."""
    return not await locks.can_acquire(key, exclusive=False)
