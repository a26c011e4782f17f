"""Issue 24's finding 10, as it happened: a Sentinel failover that loses writes.

One primary, one replica whose replication link goes through a proxy the test cuts just
before the primary dies, three Sentinels, ``statehub serve --store redis+sentinel://``
with the default ``--replicas 0``. The promoted replica lacks the last acknowledged
writes (documented for ``--replicas 0``); the new history must get a new epoch, and a
client resuming with a revision of the old one must get a snapshot, never a delta.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc

from statehub.bench.fleet import RedisProcess, start_redis, start_sentinel, start_serve_ports, stop
from statehub.client import AsyncClient
from statehub.errors import ConnectionLostError, StoreUnavailableError
from support.polling import eventually, eventually_sync
from support.raw_session import RawSession
from support.tcp_proxy import TcpProxy
from test_redis_sentinel import DEADLINE_S, _replicas_online, _sentinels_ready


def _revision(server: RedisProcess) -> int:
    client = server.client()
    try:
        return int(client.get("{statehub}:revision") or 0)
    finally:
        client.close()


async def test_a_failover_that_lost_writes_starts_a_new_epoch_and_resumes_get_snapshots(
    tmp_path: Path,
) -> None:
    processes: list[Any] = []
    proxy: TcpProxy | None = None
    try:
        primary = start_redis(tmp_path / "primary")
        processes.append(primary.process)
        proxy = TcpProxy(primary.port)
        replica = start_redis(
            tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(proxy.port)]
        )
        processes.append(replica.process)
        eventually_sync(lambda: _replicas_online(primary, 1), timeout=DEADLINE_S)
        sentinels = [start_sentinel(tmp_path / f"sentinel{i}", primary.port) for i in range(3)]
        processes += [sentinel.process for sentinel in sentinels]
        eventually_sync(lambda: _sentinels_ready(sentinels), timeout=DEADLINE_S)
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
        statehub, ports = start_serve_ports("--store", f"redis+sentinel://{hosts}/mymaster/0")
        processes.append(statehub)

        async with (
            AsyncClient("127.0.0.1", ports.tcp) as client,
            grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc}") as channel,
        ):
            copy: dict[str, Any] = {}

            async def follow() -> None:
                async for change in client.subscribe():
                    if change.snapshot:
                        copy.clear()
                    copy.update(change.updates)
                    for key in change.removals:
                        copy.pop(key, None)

            follower = asyncio.create_task(follow())
            for n in range(20):
                await client.set(f"kept{n}", n)
            eventually_sync(lambda: _revision(replica) == _revision(primary), timeout=DEADLINE_S)
            proxy.cut()  # the replica hears nothing more
            for n in range(20):
                await client.set(f"lost{n}", n)
            await eventually(lambda: len(copy) == 40, timeout=DEADLINE_S)
            before = RawSession(channel)
            hello = await before.hello()
            seen, old_epoch = hello["revision"], hello["epoch"]
            await before.close()

            primary.process.kill()
            primary.process.wait()

            async def written_after() -> bool:
                try:
                    await client.set("after", 1)
                except (StoreUnavailableError, ConnectionLostError):
                    return False
                return True

            # writes resume on the promoted replica
            await eventually(written_after, "a write after the failover", timeout=DEADLINE_S)
            expected = {f"kept{n}": n for n in range(20)} | {"after": 1}
            assert await client.get_all() == expected  # the lost writes are gone

            resumed = RawSession(channel)
            hello = await resumed.hello()
            assert hello["epoch"] != old_epoch
            sub = await resumed.subscribe(since=seen, epoch=old_epoch)
            batch = await resumed.next_batch(sub)
            assert batch["snapshot"] is True and batch["updates"] == expected
            await resumed.close()
            # The client that lived through it resumed too, and holds no lost key.
            await eventually(lambda: copy == expected, timeout=DEADLINE_S)
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    finally:
        if proxy is not None:
            proxy.close()
        for process in reversed(processes):
            stop(process)
