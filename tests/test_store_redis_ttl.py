"""Keys that expire over Redis with two servers: removed once (one revision, whichever
server's sweep gets there first) by Redis's clock, seen on both servers; time left read
from Redis; a write without ttl through the other server clears it."""

from __future__ import annotations

import asyncio

from statehub import AsyncClient
from statehub.bench.fleet import RedisProcess, start_statehub, stop
from support.polling import eventually
from support.redis_servers import redis_server

__all__ = ["redis_server"]  # the fixture, used by name


async def test_expiry_over_two_servers(redis_server: RedisProcess) -> None:
    (first, port_a), (second, port_b) = (start_statehub(redis_server.url) for _ in range(2))
    try:
        async with (
            AsyncClient("127.0.0.1", port_a) as writer,
            AsyncClient("127.0.0.1", port_b) as watcher,
        ):
            stream = watcher.subscribe()
            changes = aiter(stream)
            await anext(changes)  # the snapshot
            await writer.update({"cleared": 1, "long": 2}, ttl={"cleared": 0.3, "long": 600})
            await watcher.set("cleared", 3)  # through the other server: no longer expires
            entry = await watcher.entry("long")
            assert entry is not None and entry.expires_in is not None
            assert 590 < entry.expires_in <= 600
            assert (await watcher.entry("cleared")).expires_in is None  # type: ignore[union-attr]
            written = await writer.set("short", 1, ttl=0.3)
            seen_removals: list[tuple[int, set[str]]] = []
            while not seen_removals:
                change = await asyncio.wait_for(anext(changes), 15)
                if change.removals:
                    seen_removals.append((change.revision, set(change.removals)))
            assert seen_removals == [(written + 1, {"short"})]  # one revision, from one sweep
            await eventually(lambda: _content_is(writer, {"cleared": 3, "long": 2}))
            await stream.aclose()
            assert await watcher.get_prefix("") == {"cleared": 3, "long": 2}
    finally:
        stop(first)
        stop(second)


async def _content_is(client: AsyncClient, expected: dict[str, object]) -> bool:
    return await client.get_prefix("") == expected


async def test_history_over_two_servers(redis_server: RedisProcess) -> None:
    servers = [start_statehub(redis_server.url, "--history", "3") for _ in range(2)]
    (_, port_a), (_, port_b) = servers
    try:
        async with (
            AsyncClient("127.0.0.1", port_a) as writer,
            AsyncClient("127.0.0.1", port_b) as reader,
        ):
            first = await writer.set("k", 1)
            await writer.set("k", {"a": [1, 2.5]})
            await writer.remove("k")
            last = await reader.set("k", 4, ttl=0.2)
            await eventually(lambda: _content_is(reader, {}))
            versions = await reader.history("k")
            assert [(v.revision, v.value, v.removed) for v in versions] == [
                (first + 2, None, True),
                (last, 4, False),
                (last + 1, None, True),
            ]
            assert versions[0].identity == "anyone" and versions[-1].by == "EXPIRY"
            assert [v.revision for v in await writer.history("k", since=last)] == [last + 1]
            assert [v.revision for v in await writer.history("k", limit=1)] == [last + 1]
            async with AsyncClient("127.0.0.1", port_a) as present:
                await present.set("here", 1, ephemeral=True)
            await eventually(lambda: _last_by(reader, "here", "SESSION_END"))
    finally:
        for process, _ in servers:
            stop(process)


async def _last_by(client: AsyncClient, key: str, by: str) -> bool:
    versions = await client.history(key)
    return bool(versions) and versions[-1].by == by and versions[-1].removed


async def test_history_per_prefix_over_redis(redis_server: RedisProcess) -> None:
    process, port = start_statehub(redis_server.url, "--history", "1", "--history-prefix", "log.=3")
    try:
        async with AsyncClient("127.0.0.1", port) as client:
            for value in range(4):
                await client.update({"a": value, "log.x": value})
            assert [v.value for v in await client.history("a")] == [3]
            assert [v.value for v in await client.history("log.x")] == [1, 2, 3]
    finally:
        stop(process)
