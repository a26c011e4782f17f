"""Several ``statehub serve --store redis://...`` processes over one real redis-server."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from statehub.bench.fleet import (
    RedisProcess,
    ServedPorts,
    restart_redis,
    start_redis,
    start_serve_ports,
    stop,
)
from statehub.client import AsyncClient, ConnectionLostError
from statehub.errors import ResourceLockedError, StoreUnavailableError
from statehub.store.redis import DEFAULT_HEARTBEAT, DEFAULT_LIVENESS_TTL
from support.polling import eventually
from support.raw_session import RawSession

#: The documented bound on releasing a dead server's leases and locks (docs/redis.md).
SWEEP_BOUND_S = 10.0
DEADLINE_S = 30.0


class Fleet:
    """A redis-server and statehub servers over it, all stopped by ``close``."""

    def __init__(self, redis_process: RedisProcess) -> None:
        self.redis = redis_process
        self.servers: list[tuple[Any, ServedPorts]] = []

    def add_server(self) -> int:
        process, ports = start_serve_ports("--store", self.redis.url)
        self.servers.append((process, ports))
        return ports.tcp

    @property
    def ports(self) -> list[int]:
        """Each server's plain-TCP port (what clients use)."""
        return [ports.tcp for _, ports in self.servers]

    @property
    def grpc_ports(self) -> list[int]:
        return [ports.grpc for _, ports in self.servers]

    def close(self) -> None:
        for process, _ in self.servers:
            stop(process)
        stop(self.redis.process)


@pytest.fixture(scope="module")
def three_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(start_redis(tmp_path_factory.mktemp("redis")))
    try:
        for _ in range(3):
            fleet.add_server()
        yield fleet
    finally:
        fleet.close()


@asynccontextmanager
async def clients(ports: list[int], **options: Any) -> AsyncIterator[list[AsyncClient]]:
    opened = [AsyncClient("127.0.0.1", port, **options) for port in ports]
    try:
        for client in opened:
            await client.connect()
        yield opened
    finally:
        for client in opened:
            await client.close()


async def collect(stream: Any, changes: list[Any]) -> None:
    async for change in stream:
        changes.append(change)


async def test_three_servers_one_state_in_revision_order(three_servers: Fleet) -> None:
    ports = three_servers.ports
    async with clients(ports) as writers, clients(ports) as readers:
        streams = [reader.subscribe(prefix="t1/") for reader in readers]
        seen: list[list[Any]] = [[] for _ in readers]
        tasks = [
            asyncio.create_task(collect(stream, changes))
            for stream, changes in zip(streams, seen, strict=True)
        ]

        async def write(index: int, writer: AsyncClient) -> list[int]:
            return [await writer.set(f"t1/{index}/{n % 5}", n) for n in range(60)]

        acked = await asyncio.gather(*(write(i, w) for i, w in enumerate(writers)))
        revisions = sorted(r for per_writer in acked for r in per_writer)
        assert len(set(revisions)) == len(revisions)  # no revision handed out twice
        await eventually(
            lambda: all(changes and changes[-1].revision >= revisions[-1] for changes in seen),
            timeout=DEADLINE_S,
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        expected = {f"t1/{i}/{k}": 55 + k for i in range(3) for k in range(5)}
        for changes in seen:
            assert changes[0].snapshot
            order = [change.revision for change in changes]
            assert order == sorted(set(order))  # in order, each revision at most once
            content: dict[str, Any] = {}
            for change in changes:
                if change.snapshot:
                    content = {}
                content.update(change.updates)
                for key in change.removals:
                    content.pop(key, None)
            assert content == expected
        for stream in streams:
            await stream.aclose()


async def test_lease_and_lock_contention_over_three_servers(three_servers: Fleet) -> None:
    ports = three_servers.ports
    async with clients(ports * 2) as contenders:
        lock_holds: list[tuple[float, float]] = []
        lease_holds: list[tuple[str, float, float]] = []
        foreign_writes: list[tuple[str, float, float]] = []

        async def lock_loop(client: AsyncClient) -> None:
            for _ in range(6):
                async with client.get_lock("t2/L", timeout=DEADLINE_S):
                    entered = time.monotonic()
                    await asyncio.sleep(0.005)
                    lock_holds.append((entered, time.monotonic()))

        async def lease_loop(client: AsyncClient) -> None:
            name = client.name
            for n in range(10):
                if await client.attempt_update_locks({"t2/k": 5.0}):
                    taken = time.monotonic()
                    await client.set("t2/k", f"{name}:{n}")  # must never be refused
                    released_at = time.monotonic()
                    lease_holds.append((name, taken, released_at))
                    await client.attempt_update_locks({"t2/k": None})
                else:
                    sent = time.monotonic()
                    try:
                        await client.set("t2/k", f"{name}:{n}:intruder")
                    except ResourceLockedError:
                        continue
                    foreign_writes.append((name, sent, time.monotonic()))

        await asyncio.wait_for(
            asyncio.gather(
                *(lock_loop(client) for client in contenders),
                *(lease_loop(client) for client in contenders),
            ),
            120,
        )
        assert len(lock_holds) == 6 * len(contenders)
        holds = sorted(lock_holds)
        for (_, first_end), (second_start, _) in itertools.pairwise(holds):
            assert second_start >= first_end, "two exclusive holders at once"
        assert lease_holds, "nobody ever got the lease"
        for writer, sent, acked in foreign_writes:
            for holder, taken, released in lease_holds:
                if holder != writer:
                    # A write through a foreign lease: it ran wholly inside that lease.
                    assert not (taken < sent and acked < released), (writer, holder)


async def test_a_client_moving_to_another_server_resumes_without_a_gap(
    three_servers: Fleet,
) -> None:
    a_port, b_port, _ = three_servers.grpc_ports
    async with clients([three_servers.ports[2]]) as (writer,):
        for n in range(5):
            await writer.set(f"t3/{n}", n)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a_port}") as channel:
            session = RawSession(channel)
            epoch = (await session.hello())["epoch"]
            sub = await session.subscribe(prefix="t3/")
            batch = await session.next_batch(sub)
            seen_revision = batch["revision"]
            content = dict(batch["updates"])
            await session.close()
        for n in range(3, 9):  # missed while moving: changes and a removal
            await writer.set(f"t3/{n}", n * 10)
        await writer.remove("t3/0")
        expected = {f"t3/{n}": n for n in range(1, 3)} | {f"t3/{n}": n * 10 for n in range(3, 9)}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{b_port}") as channel:
            session = RawSession(channel)
            await session.hello()
            sub = await session.subscribe(prefix="t3/", since=seen_revision, epoch=epoch)
            while content != expected:
                batch = await session.next_batch(sub)
                assert batch["snapshot"] is False  # B knew the missed revisions: a delta
                content.update(batch["updates"])
                for key in batch["removals"]:
                    content.pop(key, None)
            await session.close()


async def test_kill_9_of_a_server_frees_its_leases_and_locks_within_the_bound(
    tmp_path: Path,
) -> None:
    assert DEFAULT_LIVENESS_TTL + DEFAULT_HEARTBEAT <= SWEEP_BOUND_S
    fleet = Fleet(start_redis(tmp_path / "redis"))
    try:
        doomed, survivor = fleet.add_server(), fleet.add_server()
        async with (
            clients([doomed], reconnect=False) as (victim,),
            clients([survivor, survivor]) as (other, bystander),
        ):
            assert await victim.attempt_update_locks({"held": 3600.0})
            held = await victim.acquire_lock("rw", "victim-task", True, None)
            assert held is not None
            assert await bystander.attempt_update_locks({"mine": 3600.0})
            assert not await other.attempt_update_locks({"held": 1.0})
            assert not await other.test_lock("rw")
            os.kill(fleet.servers[0][0].pid, signal.SIGKILL)
            killed_at = time.monotonic()
            await eventually(
                lambda: other.attempt_update_locks({"held": 1.0}),
                "the killed server's lease freed by the sweep",
                timeout=SWEEP_BOUND_S,
                interval=0.1,
            )
            async with other.get_lock("rw", timeout=SWEEP_BOUND_S):
                pass
            assert time.monotonic() - killed_at < SWEEP_BOUND_S + 1
            leases = {lease.key: lease.mine for lease in await bystander.leases()}
            assert leases.get("mine") is True  # nobody else's lease was released
            await bystander.set("after", 1)  # the survivor's clients never noticed
    finally:
        fleet.close()


@pytest.mark.parametrize("aof_always", [True, False], ids=["aof-always", "no-persistence"])
async def test_redis_killed_and_restarted(tmp_path: Path, aof_always: bool) -> None:
    redis_process = start_redis(tmp_path / "redis", aof_always=aof_always)
    fleet = Fleet(redis_process)
    try:
        ports = [fleet.add_server(), fleet.add_server()]
        async with clients(ports) as (writer, reader):
            stream = reader.subscribe()
            changes: list[Any] = []
            watcher = asyncio.create_task(collect(stream, changes))
            acknowledged = {}
            for n in range(50):
                acknowledged[f"k{n}"] = n
                await writer.set(f"k{n}", n)

            async def reader_has(key: str, value: int) -> bool:
                try:
                    return await reader.get(key) == value
                except ConnectionLostError:
                    return False

            await eventually(
                lambda: reader_has("k49", 49), timeout=DEADLINE_S
            )  # the reader's server has it
            fleet.redis.process.kill()
            fleet.redis.process.wait()
            with pytest.raises(StoreUnavailableError, match="unreachable"):
                await writer.set("during", 1)
            assert await reader.get("k49") == 49  # reads still answered
            fleet.redis = restart_redis(fleet.redis)

            async def written_after() -> bool:
                try:
                    await writer.set("after", 1)
                except (StoreUnavailableError, ConnectionLostError):  # a new epoch ends sessions
                    return False
                return True

            await eventually(written_after, "a write after Redis restarted", timeout=DEADLINE_S)

            await eventually(lambda: reader_has("after", 1), timeout=DEADLINE_S)
            everything = await reader.get_all()
            if aof_always:
                # Every acknowledged write survived; the history went on, no snapshot.
                assert {k: everything[k] for k in acknowledged} == acknowledged
                assert not any(change.snapshot for change in changes[1:])
            else:
                # Redis lost everything: a new epoch, and every subscriber a snapshot.
                assert everything == {"after": 1}
                await eventually(
                    lambda: any(change.snapshot for change in changes[1:]), timeout=DEADLINE_S
                )
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    finally:
        fleet.close()
