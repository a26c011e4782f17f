"""A Redis that lost history statehub servers saw starts a new epoch, always.

The rollback here is a redis-server restarted from an older dump (as after a failover to
a replica that missed the last writes, or an ``appendfsync everysec`` crash): same epoch
key, lower revision. Before the fix, the servers kept the epoch and handed the lost
revision numbers out again, and a client resuming with one of them got a wrong delta.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import redis

from statehub.bench.fleet import RedisProcess, restart_redis, start_redis, start_serve_ports, stop
from statehub.client import AsyncClient
from statehub.core.change import DictionaryChange
from statehub.errors import ConnectionLostError, StoreUnavailableError
from statehub.store.state_dictionary import StateDictionary
from support.polling import eventually
from support.raw_session import RawSession
from support.redis_servers import started_state

DEADLINE_S = 30.0


def _save_dump(server: RedisProcess) -> None:
    client = redis.Redis(port=server.port)
    try:
        client.save()
    finally:
        client.close()


def _roll_back(server: RedisProcess) -> RedisProcess:
    """kill -9 Redis and start it again from its last dump: the writes since are gone."""
    server.process.kill()
    server.process.wait()
    return restart_redis(server)


async def _written(client: AsyncClient, key: str, value: int) -> bool:
    """Whether ``client`` wrote ``key`` (False while the store or the session is down)."""
    try:
        await client.set(key, value)
    except (StoreUnavailableError, ConnectionLostError):
        return False
    return True


async def _commit_when_back(state: StateDictionary, **updates: Any) -> int:
    async def committed() -> int | None:
        try:
            return await state.update_state_async("w", DictionaryChange(updates))
        except StoreUnavailableError:  # the store reconnects with backoff
            return None

    revision: int = await eventually(committed, "a commit once Redis is back", timeout=DEADLINE_S)
    return revision


async def test_a_rolled_back_redis_gets_a_new_epoch_and_no_revision_is_reused(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path / "redis")
    try:
        async with started_state(server.url) as a, started_state(server.url) as b:
            for i in range(5):
                await a.update_state_async("w", DictionaryChange({f"k{i}": i}))
            _save_dump(server)  # Redis will come back at revision 5
            for i in range(5, 9):
                await a.update_state_async("w", DictionaryChange({f"k{i}": i}))
            await eventually(lambda: b.revision == 9)
            old_epoch = a.epoch
            server = _roll_back(server)

            # The first server back in Redis (a commit, or a follower reconnecting) finds
            # revision 5 below the 9 it saw, and starts a new epoch; the other follows it.
            revision = await _commit_when_back(a, after=True)
            assert a.epoch != old_epoch
            await eventually(
                lambda: b.epoch == a.epoch and b.revision == revision, timeout=DEADLINE_S
            )
            assert revision == 6  # a number seen before, but in the new epoch only
            expected = {f"k{i}": i for i in range(5)} | {"after": True}
            assert a.copy_content() == b.copy_content() == expected
    finally:
        stop(server.process)


async def test_a_rollback_noticed_only_by_an_idle_follower_starts_a_new_epoch(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path / "redis")
    try:
        async with started_state(server.url) as state:
            await state.update_state_async("w", DictionaryChange({"x": 1}))
            _save_dump(server)
            await state.update_state_async("w", DictionaryChange({"x": 2}))
            old_epoch = state.epoch
            server = _roll_back(server)
            # Nobody writes: the follower's reconnection check finds the rewind.
            await eventually(lambda: state.epoch != old_epoch, timeout=DEADLINE_S)
            assert state.revision == 1 and state.copy_content() == {"x": 1}
    finally:
        stop(server.process)


async def test_clients_resuming_across_a_rollback_get_a_snapshot_not_a_delta(
    tmp_path: Path,
) -> None:
    """End to end over statehub serve: an AsyncClient stream that lives through the
    rollback (it reconnects and resumes) and a raw session resuming with the revision and
    epoch it kept both end up with the state as it is, never the lost writes."""
    redis_process = start_redis(tmp_path / "redis")
    processes = [redis_process.process]
    try:
        statehub, ports = start_serve_ports("--store", redis_process.url)
        processes.append(statehub)
        async with (
            AsyncClient("127.0.0.1", ports.tcp) as client,
            grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc}") as channel,
        ):
            stream = client.subscribe()
            seen_by_stream: dict[str, Any] = {}

            async def follow() -> None:
                async for change in stream:
                    if change.snapshot:
                        seen_by_stream.clear()
                    seen_by_stream.update(change.updates)
                    for key in change.removals:
                        seen_by_stream.pop(key, None)

            follower = asyncio.create_task(follow())
            for i in range(3):
                await client.set(f"k{i}", i)
            _save_dump(redis_process)
            for i in range(3, 7):
                await client.set(f"k{i}", i)
            await eventually(lambda: len(seen_by_stream) == 7, timeout=DEADLINE_S)
            before = RawSession(channel)
            hello = await before.hello()
            seen, old_epoch = hello["revision"], hello["epoch"]
            await before.close()

            redis_process = _roll_back(redis_process)
            processes[0] = redis_process.process
            # Writes after the rollback reuse the numbers 4 to 7, in a new epoch.
            for n in range(4):
                await eventually(
                    lambda n=n: _written(client, f"new{n}", n),
                    f"new{n} written after the rollback",
                    timeout=DEADLINE_S,
                )
            expected = {f"k{i}": i for i in range(3)} | {f"new{n}": n for n in range(4)}
            assert await client.get_all() == expected
            await eventually(lambda: seen_by_stream == expected, timeout=DEADLINE_S)

            resumed = RawSession(channel)
            hello = await resumed.hello()
            assert hello["epoch"] != old_epoch and hello["revision"] >= seen
            sub = await resumed.subscribe(since=seen, epoch=old_epoch)
            batch = await resumed.next_batch(sub)
            assert batch["snapshot"] is True and batch["updates"] == expected
            await resumed.close()
            await stream.aclose()
            await follower
    finally:
        for process in reversed(processes):
            stop(process)
