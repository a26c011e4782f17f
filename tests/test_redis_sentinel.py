"""A Sentinel failover under statehub serve --store redis+sentinel://... --replicas 1."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis

from statehub.bench.fleet import (
    RedisProcess,
    start_redis,
    start_sentinel,
    start_statehub,
    stop,
)
from statehub.client import AsyncClient, ConnectionLostError
from statehub.errors import DurabilityError, StoreUnavailableError
from statehub.protocol.codec import decode_value
from support.polling import eventually_sync

DEADLINE_S = 60.0
#: The bound docs/redis.md states for writes to be acknowledged again after the primary
#: dies, with N+1 replicas: Sentinel's down-after-milliseconds (1 s in ``start_sentinel``)
#: + two failover-timeouts (10 s each: a Sentinel whose election failed, as a split vote
#: does, tries again only after twice that) + the Redis client's longest reconnect
#: backoff (2 s). Typically it takes 2-4 s.
ACKNOWLEDGED_AGAIN_WITHIN_S = 1.0 + 2 * 10.0 + 2.0


def _replicas_online(primary: RedisProcess, count: int) -> bool:
    client = primary.client()
    try:
        info = client.info("replication")
        online = [info.get(f"slave{i}", {}).get("state") == "online" for i in range(count)]
        return info.get("connected_slaves") == count and all(online)
    finally:
        client.close()


def _sentinels_ready(sentinels: list[RedisProcess]) -> bool:
    for sentinel in sentinels:
        client = sentinel.client()
        try:
            if not client.execute_command("SENTINEL", "REPLICAS", "mymaster"):
                return False
            if len(client.execute_command("SENTINEL", "SENTINELS", "mymaster")) < 2:
                return False
        finally:
            client.close()
    return True


async def test_a_failover_loses_no_acknowledged_write(tmp_path: Path) -> None:
    processes: list[Any] = []
    try:
        primary = start_redis(tmp_path / "primary")
        processes.append(primary.process)
        # Two replicas: after the failover one is left to acknowledge WAIT 1.
        replicas = [
            start_redis(
                tmp_path / f"replica{i}", extra=["--replicaof", "127.0.0.1", str(primary.port)]
            )
            for i in range(2)
        ]
        processes += [replica.process for replica in replicas]
        eventually_sync(lambda: _replicas_online(primary, 2), timeout=DEADLINE_S)
        sentinels = [start_sentinel(tmp_path / f"sentinel{i}", primary.port) for i in range(3)]
        processes += [sentinel.process for sentinel in sentinels]
        eventually_sync(lambda: _sentinels_ready(sentinels), timeout=DEADLINE_S)
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
        url = f"redis+sentinel://{hosts}/mymaster/0"
        server, port = start_statehub(url, "--replicas", "1")
        processes.append(server)

        acknowledged: dict[str, int] = {}
        async with AsyncClient("127.0.0.1", port) as client:
            for n in range(30):
                await client.set(f"k{n}", n)
                acknowledged[f"k{n}"] = n
            primary.process.kill()
            killed = time.monotonic()
            primary.process.wait()
            first_acknowledged: float | None = None
            failed = 0
            deadline = time.monotonic() + DEADLINE_S
            n = 30
            while n < 60:  # keep writing through the failover
                assert time.monotonic() < deadline, "writes did not resume after failover"
                try:
                    await client.set(f"k{n}", n)
                except (StoreUnavailableError, DurabilityError, ConnectionLostError):
                    failed += 1
                    await asyncio.sleep(0.1)
                    continue
                acknowledged[f"k{n}"] = n
                if first_acknowledged is None:
                    first_acknowledged = time.monotonic()
                n += 1
            assert failed > 0  # the failover was noticed, not skipped
            assert first_acknowledged is not None
            resumed_after = first_acknowledged - killed
            assert resumed_after < ACKNOWLEDGED_AGAIN_WITHIN_S, (
                f"writes were acknowledged again {resumed_after:.1f} s after the primary "
                f"died, over the documented {ACKNOWLEDGED_AGAIN_WITHIN_S} s"
            )
            print(f"acknowledged again {resumed_after:.2f} s after kill -9 of the primary")

        sentinel = redis.sentinel.Sentinel([("127.0.0.1", s.port) for s in sentinels])
        new_primary = sentinel.master_for("mymaster", socket_timeout=5)
        promoted = new_primary.connection_pool.get_master_address()[1]
        assert promoted in {replica.port for replica in replicas}
        stored = new_primary.hgetall("{statehub}:content")
        content = {key.decode(): decode_value(value) for key, value in stored.items()}
        assert {key: content.get(key) for key in acknowledged} == acknowledged
        new_primary.close()
    finally:
        for process in reversed(processes):
            stop(process)
