"""Lock requests keep the order they came in, even within one frame: a ``lock`` that has
to wait takes its place in the queue before the requests behind it are handled, in one
process and over Redis (a real redis-server), through a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from statehub.bench.fleet import RedisProcess
from statehub.serving.state_server import StateServer
from statehub.store.redis import RedisStore
from statehub.store.state_dictionary import StateDictionary
from support.raw_session import RemoteError, connected, running_server
from support.redis_servers import FAST_LIVENESS, redis_server

__all__ = ["redis_server"]  # the fixture, used by name


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def lock_server(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[StateServer]:
    if backend == "memory":
        async with running_server() as server:
            yield server
        return
    redis: RedisProcess = request.getfixturevalue("redis_server")
    store = RedisStore(redis.url, **FAST_LIVENESS)
    try:
        async with running_server(state=StateDictionary(store=store)) as server:
            yield server
    finally:
        store.close()


async def test_a_waiting_lock_is_in_the_queue_for_the_next_request_of_its_frame(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async with lock_server(backend, request) as server, connected(server) as a:
        await a.request("lock", key="L", exclusive=False, owner="reader")
        writer, test = await a.send_many(
            [
                {"op": "lock", "key": "L", "exclusive": True, "owner": "writer"},
                {"op": "test_lock", "key": "L", "exclusive": False},
            ]
        )
        # A writer waits: a new reader would wait behind it.
        assert (await a.reply(test))["free"] is False
        assert not a._future(writer).done()
        await a.request("unlock", key="L", exclusive=False, owner="reader")
        assert set(await a.reply(writer)) == {"fence"}
        await a.request("unlock", key="L", exclusive=True, owner="writer")
        assert (await a.request("test_lock", key="L", exclusive=True))["free"] is True


async def test_a_release_in_the_same_frame_goes_to_the_waiter_asked_before_it(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async with lock_server(backend, request) as server, connected(server) as a:
        await a.request("lock", key="L", exclusive=True, owner="holder")
        waiter, _, test = await a.send_many(
            [
                {"op": "lock", "key": "L", "exclusive": True, "owner": "waiter"},
                {"op": "unlock", "key": "L", "exclusive": True, "owner": "holder"},
                {"op": "test_lock", "key": "L", "exclusive": False},
            ]
        )
        assert set(await a.reply(waiter)) == {"fence"}
        assert (await a.reply(test))["free"] is False  # the waiter holds it by then


async def test_two_waiters_in_one_frame_keep_their_order(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async with (
        lock_server(backend, request) as server,
        connected(server) as holder,
        connected(server) as a,
    ):
        await holder.request("lock", key="L", exclusive=True, owner="")
        requests = [
            {"op": "lock", "key": "L", "exclusive": True, "owner": f"w{n}"} for n in range(5)
        ]
        waiters = await a.send_many(requests)
        await a.request("ping")
        await holder.request("unlock", key="L", exclusive=True, owner="")
        fences = []
        for n, waiter in enumerate(waiters):
            fences.append((await a.reply(waiter))["fence"])
            for later in waiters[n + 1 :]:
                assert not a._future(later).done()  # FIFO: only the first waiter holds it
            await a.request("unlock", key="L", exclusive=True, owner=f"w{n}")
        assert fences == sorted(fences)


async def test_a_lock_cancelled_in_its_own_frame_leaves_no_trace(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async with (
        lock_server(backend, request) as server,
        connected(server) as holder,
        connected(server) as a,
    ):
        await holder.request("lock", key="L", exclusive=True, owner="")
        waiter_id = a._next_id  # the ids send_many gives, in order
        waiter, cancel = await a.send_many(
            [
                {"op": "lock", "key": "L", "exclusive": True, "owner": "w"},
                {"op": "cancel", "request": waiter_id},
            ]
        )
        assert waiter == waiter_id
        assert (await a.reply(cancel))["cancelled"] is True
        with pytest.raises(RemoteError) as cancelled:
            await a.reply(waiter)
        assert cancelled.value.status == "CANCELLED"
        await holder.request("unlock", key="L", exclusive=True, owner="")
        assert (await a.request("test_lock", key="L", exclusive=True))["free"] is True


async def test_lease_changes_and_listings_in_one_frame_keep_their_order(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async with lock_server(backend, request) as server, connected(server) as a:
        _, listed, _, listed_after = await a.send_many(
            [
                {"op": "leases", "acquire": {"k": None}},
                {"op": "list_leases"},
                {"op": "leases", "release": ["k"]},
                {"op": "list_leases"},
            ]
        )
        assert [lease[:2] for lease in (await a.reply(listed))["leases"]] == [["k", True]]
        assert (await a.reply(listed_after))["leases"] == []
