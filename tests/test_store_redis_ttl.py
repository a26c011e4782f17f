"""Keys that expire over Redis with two servers: removed once (one revision, whichever
server's sweep gets there first) by Redis's clock, seen on both servers; time left read
from Redis; a write without ttl through the other server clears it."""

from __future__ import annotations

import asyncio

from client_servers import eventually_async
from redis_support import redis_server
from statehub import AsyncClient
from statehub.bench.fleet import RedisProcess, start_statehub, stop

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
            await eventually_async(lambda: _content_is(writer, {"cleared": 3, "long": 2}))
            await stream.aclose()
            assert await watcher.get_prefix("") == {"cleared": 3, "long": 2}
    finally:
        stop(first)
        stop(second)


async def _content_is(client: AsyncClient, expected: dict[str, object]) -> bool:
    return await client.get_prefix("") == expected
