"""Keys bound to a session over Redis, with two servers: removed in one change when the
session ends (seen on the other server), unbound by a plain write from either server, and
removed by the dead-server sweep when the server holding the session is killed."""

from __future__ import annotations

import contextlib
import signal

from statehub import AsyncClient
from statehub.bench.fleet import RedisProcess, start_statehub, stop
from statehub.store.redis import DEFAULT_HEARTBEAT, DEFAULT_LIVENESS_TTL
from support.polling import eventually
from support.redis_servers import redis_server

__all__ = ["redis_server"]  # the fixture, used by name

#: The sweep bound: a dead server's liveness key expires, then the next beat of another
#: server sweeps; with slack for a loaded machine.
SWEEP_BOUND_S = DEFAULT_LIVENESS_TTL + DEFAULT_HEARTBEAT + 10


async def _content(client: AsyncClient, prefix: str = "") -> dict[str, object]:
    return await client.get_prefix(prefix)


async def test_a_session_end_removes_its_keys_on_every_server(
    redis_server: RedisProcess,
) -> None:
    (first, port_a), (second, port_b) = (start_statehub(redis_server.url) for _ in range(2))
    try:
        async with AsyncClient("127.0.0.1", port_b) as watcher:
            async with AsyncClient("127.0.0.1", port_a) as present:
                await present.update(
                    {"here.a": 1, "here.b": 2, "kept": 3, "plain": 0},
                    ephemeral=["here.a", "here.b", "plain"],
                )
                await watcher.set("plain", 1)  # from the other server: unbinds it
                await eventually(
                    lambda: _is(watcher, {"here.a": 1, "here.b": 2, "kept": 3, "plain": 1})
                )
            await eventually(lambda: _is(watcher, {"kept": 3, "plain": 1}))
    finally:
        stop(first)
        stop(second)


async def _is(client: AsyncClient, expected: dict[str, object]) -> bool:
    return await _content(client) == expected


async def test_a_killed_servers_keys_go_within_the_sweep_bound(
    redis_server: RedisProcess,
) -> None:
    (doomed, port_a), (survivor, port_b) = (start_statehub(redis_server.url) for _ in range(2))
    try:
        async with AsyncClient("127.0.0.1", port_b) as watcher:
            present = AsyncClient("127.0.0.1", port_a, reconnect=False)
            await present.connect()
            await present.set("here.doomed", True, ephemeral=True)
            await present.set("kept", 1)
            await eventually(lambda: _is(watcher, {"here.doomed": True, "kept": 1}))
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
            await eventually(lambda: _is(watcher, {"kept": 1}), timeout=SWEEP_BOUND_S)
            with contextlib.suppress(Exception):  # its server is gone: closing may fail
                await present.close()
    finally:
        stop(doomed)
        stop(survivor)
