"""AsyncClient against a real StateServer over loopback."""

from __future__ import annotations

import asyncio
import math
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from statehub import AsyncClient, ConnectionLostError, DictionaryChange, StateChange
from statehub.errors import (
    CommandFailedError,
    LockFailedError,
    LockUpgradeError,
    MessageTooLargeError,
    ResourceLockedError,
)
from statehub.serving.state_server import StateServer
from support.client_servers import free_port
from support.polling import eventually
from support.transports import TCP, Transport


@pytest.fixture
async def other(server: StateServer, transport: Transport) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport.url(server)) as connected:
        yield connected


VALUES = {
    "int": 1,
    "float": 1.0,
    "big": 2**100,
    "negative big": -(2**70),
    "bool": True,
    "none": None,
    "text": "héllo",
    "nested": {"list": [1, 2.5, None, False, {"deep": [2**64]}], "empty": {}},
    "inf": math.inf,
}


async def test_values_keep_their_exact_types(client: AsyncClient, other: AsyncClient) -> None:
    for key, value in VALUES.items():
        await client.set(key, value)
    for key, value in VALUES.items():
        got = await other.get(key)
        assert got == value and type(got) is type(value), key
    assert type((await other.get("nested"))["list"][1]) is float
    assert math.isnan(await _roundtrip(client, math.nan))


async def _roundtrip(client: AsyncClient, value: object) -> float:
    await client.set("x", value)
    result: float = await client.get("x")
    return result


async def test_get_default_remove_and_update_revisions(client: AsyncClient) -> None:
    assert await client.get("missing") is None
    assert await client.get("missing", "fallback") == "fallback"
    first = await client.set("a", 1)
    second = await client.update(updates={"b": 2, "c": 3}, removals=["a"])
    assert second == first + 1
    assert await client.get_all() == {"b": 2, "c": 3}
    assert await client.remove("b") == second + 1
    assert await client.get("b", "gone") == "gone"


async def test_bad_values_are_refused_naming_the_key(client: AsyncClient) -> None:
    with pytest.raises(TypeError, match=r"'k'.*set.*value\.inner"):
        await client.set("k", {"inner": {1, 2}})
    with pytest.raises(TypeError, match="keys must be str"):
        await client.update(updates={1: 2})  # type: ignore[dict-item]
    assert await client.get("k") is None


async def test_many_concurrent_requests_share_the_stream(client: AsyncClient) -> None:
    revisions = await asyncio.gather(*(client.set(f"key{i % 10}", i) for i in range(2000)))
    assert sorted(revisions) == list(range(revisions[0], revisions[0] + 2000))
    assert await client.get("key9") == 1999


async def test_errors_keep_their_type_and_message(server: StateServer, client: AsyncClient) -> None:
    def explode() -> None:
        raise RuntimeError("boom")

    server.register_command("explode", explode)
    with pytest.raises(KeyError, match="no command named 'nope'"):
        await client.run_command("nope")
    with pytest.raises(CommandFailedError, match=r"explode.*boom"):
        await client.run_command("explode")


async def test_commands(server: StateServer, client: AsyncClient) -> None:
    server.register_command("add", lambda a, b: {"sum": a + b}, {"b": 10})
    assert (await client.available_commands())["add"] == {"b": 10}
    assert await client.run_command("add", a=1) == {"sum": 11}
    assert await client.run_command("add", a=1, b=2) == {"sum": 3}


async def test_subscribe_gives_a_snapshot_then_coalesced_deltas(
    client: AsyncClient, other: AsyncClient
) -> None:
    await client.update({"a": 1, "b": 2})
    async with other.subscribe(interval=0.2) as changes:
        first = await anext(changes)
        assert isinstance(first, StateChange)
        assert first.snapshot and first.updates == {"a": 1, "b": 2}
        revision = first.revision
        for i in range(50):
            await client.set("a", i)
        await client.remove("b")
        seen: list[StateChange] = []
        while not seen or seen[-1].updates.get("a") != 49 or "b" not in seen[-1].removals:
            seen.append(await anext(changes))
        assert len(seen) < 25  # coalesced: far fewer batches than the 51 changes
        assert not any(change.snapshot for change in seen)
        assert seen[-1].revision == revision + 51


async def test_subscribe_with_prefix(client: AsyncClient, other: AsyncClient) -> None:
    await client.update({"avatar.1": "x", "scene": 1})
    async with other.subscribe(prefix="avatar.") as changes:
        assert (await anext(changes)).updates == {"avatar.1": "x"}
        await client.set("scene", 2)
        await client.set("avatar.2", "y")
        change = await anext(changes)
        assert change.updates == {"avatar.2": "y"} and not change.removals


async def test_mirror_follows_the_state(client: AsyncClient, other: AsyncClient) -> None:
    await client.set("before", 1)
    await other.subscribe_all_state_updates(interval=1 / 30)
    assert other.copy_state() == {"before": 1}
    await client.update({"after": [1, 2]}, removals=["before"])
    await eventually(lambda: other.copy_state() == {"after": [1, 2]})
    with other.lock_state() as state:
        assert dict(state) == {"after": [1, 2]}
        with pytest.raises(TypeError):
            state["x"] = 1  # type: ignore[index]


async def test_attempt_update_state_and_leases(client: AsyncClient, other: AsyncClient) -> None:
    assert await client.attempt_update_locks({"k": None, "held": 30})
    assert not await other.attempt_update_state(DictionaryChange({"held": 1}))
    with pytest.raises(ResourceLockedError, match="held") as refused:
        await other.update({"free": 1, "held": 2})
    assert refused.value.keys == frozenset({"held"})
    assert await other.get("free") is None  # atomic: nothing applied
    assert not await other.attempt_update_locks({"held": 5})
    assert await client.attempt_update_state(DictionaryChange({"held": 1}))
    leases = await other.leases()
    assert [(lease.key, lease.mine) for lease in leases] == [("held", False)]
    with pytest.warns(DeprecationWarning, match=r"list_leases\(\) is deprecated, use .*leases\(\)"):
        former = await other.list_leases()
    assert [(key, mine) for key, mine, _ in former] == [("held", False)]
    assert await client.attempt_update_locks({"held": None})
    assert await other.attempt_update_state(DictionaryChange({"held": 2}))


async def test_lease_expires_over_the_network(client: AsyncClient, other: AsyncClient) -> None:
    assert await client.attempt_update_locks({"k": 0.2})
    assert not await other.attempt_update_state(DictionaryChange({"k": 1}))
    results: list[bool] = []

    async def try_write() -> bool:
        results.append(await other.attempt_update_state(DictionaryChange({"k": 1})))
        return results[-1]

    await eventually(try_write)
    assert results[0] is False and results[-1] is True


async def test_leases_are_released_when_the_client_disconnects(
    server: StateServer, other: AsyncClient
) -> None:
    async with AsyncClient("127.0.0.1", server.port) as leaving:
        assert await leaving.attempt_update_locks({"k": 60})
        assert not await other.attempt_update_locks({"k": 5})
    await eventually(lambda: other.attempt_update_locks({"k": 5}))


async def test_exclusive_locks_exclude_across_clients(
    client: AsyncClient, other: AsyncClient
) -> None:
    async with client.get_lock("job"):
        assert not await other.test_lock("job")
        with pytest.raises(LockFailedError, match="timed out"):
            async with other.get_lock("job", timeout=0.1):
                pytest.fail("got a lock that is held exclusively")
        with pytest.raises(LockFailedError):
            async with other.get_lock("job", exclusive=False, timeout=0.05):
                pytest.fail("got a shared lock while it is held exclusively")
    assert await other.test_lock("job")
    async with other.get_lock("job", timeout=1):
        assert not await client.test_lock("job", exclusive=False)


async def test_a_cancelled_lock_wait_leaves_the_server_queue(
    server: StateServer, client: AsyncClient, other: AsyncClient
) -> None:
    """A cancelled waiting writer must not keep holding off new readers (no trace)."""
    async with client.get_lock("data", exclusive=False):
        waiting = asyncio.create_task(_never_granted(other, "data"))
        await eventually(lambda: not server.locks.can_acquire("data", exclusive=False).result())
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await eventually(lambda: server.locks.can_acquire("data", exclusive=False).result())
        async with other.get_lock("data", exclusive=False, timeout=5):
            pass
    assert await other.test_lock("data")


async def _never_granted(client: AsyncClient, key: str) -> None:
    async with client.get_lock(key):
        pytest.fail("the lock was granted while held shared by another client")


async def test_shared_locks_are_shared(client: AsyncClient, other: AsyncClient) -> None:
    async with client.get_lock("data", exclusive=False), other.get_lock("data", exclusive=False):
        assert await client.test_lock("data", exclusive=False)
        assert not await client.test_lock("data", exclusive=True)
        with pytest.raises(LockUpgradeError):
            async with client.get_lock("data", exclusive=True):
                pass


async def test_a_waiting_writer_gets_the_lock_when_it_is_released(
    server: StateServer, client: AsyncClient, other: AsyncClient
) -> None:
    order: list[str] = []
    async with client.get_lock("job"):
        waiter = asyncio.create_task(_hold(other, "job", order))
        await eventually(lambda: _waiting_writers(server, "job") == 1)
        order.append("client releases")
    await waiter
    assert order == ["client releases", "other holds"]


def _waiting_writers(server: StateServer, key: str) -> int:
    # An in-process table answers at once: its future is done when it comes back.
    held = [holding for holding in server.locks.holdings().result() if holding.key == key]
    return sum(exclusive for holding in held for _, exclusive, _ in holding.waiters)


async def _hold(client: AsyncClient, key: str, order: list[str]) -> None:
    async with client.get_lock(key, timeout=5):
        order.append("other holds")


async def test_two_tasks_of_one_client_exclude_each_other(client: AsyncClient) -> None:
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with client.get_lock("job"):
            held.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await held.wait()
    with pytest.raises(LockFailedError):
        async with client.get_lock("job", timeout=0.1):
            pytest.fail("a second task of the same client got the exclusive lock")
    release.set()
    await task
    async with client.get_lock("job", timeout=1):
        pass


async def test_a_cancelled_lock_wait_leaves_the_lock_free(
    server: StateServer, client: AsyncClient, other: AsyncClient
) -> None:
    async with client.get_lock("job"):
        waiting = asyncio.create_task(_hold(other, "job", []))
        await eventually(lambda: _waiting_writers(server, "job") == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    async with client.get_lock("job", timeout=2):
        pass


async def test_server_stopped_gives_connection_lost(
    server: StateServer, transport: Transport
) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def slow() -> dict[str, int]:
        started.set()
        await gate.wait()
        return {"done": 1}

    server.register_command("slow", slow)
    client = AsyncClient(transport.url(server), reconnect=False)
    await client.connect()
    lost: list[str] = []
    client.connection_lost.add_callback(lambda reason: lost.append(reason))
    pending = asyncio.create_task(client.run_command("slow"))
    await started.wait()
    await server.stop()
    with pytest.raises(ConnectionLostError, match="lost the connection"):
        await pending
    with pytest.raises(ConnectionLostError, match="not connected"):
        await client.get("a")
    assert len(lost) == 1
    await client.close()
    with pytest.raises(ConnectionLostError, match="closed"):
        await client.get("a")


async def test_connect_to_nothing_fails_clearly() -> None:
    client = AsyncClient("127.0.0.1", free_port(), connect_timeout=5)
    with pytest.raises(ConnectionLostError, match="cannot connect"):
        await client.connect()


async def test_reconnects_resubscribes_and_reports_lost_leases_and_locks(
    transport: Transport,
) -> None:
    first = StateServer(address="127.0.0.1", port=0)
    await first.start()
    url = transport.url(first)
    port = getattr(first, transport.attribute)
    client = AsyncClient(url, backoff_initial=0.02, backoff_max=0.2)
    await client.connect()
    events: list[tuple[str, object]] = []
    client.connection_lost.add_callback(lambda reason: events.append(("lost", None)))
    client.leases_lost.add_callback(lambda keys: events.append(("leases", keys)))
    client.locks_lost.add_callback(lambda keys: events.append(("locks", keys)))
    client.reconnected.add_callback(lambda: events.append(("reconnected", None)))
    await client.update({"a": 1, "b": 2})
    await client.set("c", 3)
    await client.remove("c")
    await client.subscribe_all_state_updates(0)
    assert await client.attempt_update_locks({"a": 60, "b": 60, "expired": 0})
    changes = client.subscribe(prefix="")
    assert (await anext(changes)).updates == {"a": 1, "b": 2}

    with pytest.raises(LockFailedError, match="lost while held"):
        async with client.get_lock("job"):
            await first.stop()
            await eventually(lambda: not client.connected)
            with pytest.raises(ConnectionLostError):
                await client.get("a")
    assert events[:3] == [("lost", None), ("leases", ["a", "b"]), ("locks", ["job"])]

    second = transport.server(port)
    second.state.update_state(None, DictionaryChange({"fresh": True}))
    await second.start()
    try:
        await client.wait_connected(timeout=10)
        assert events[-1] == ("reconnected", None)
        # The new server is behind the revision the client saw (another history): the
        # client subscribes afresh and a snapshot replaces the mirror.
        await eventually(lambda: client.copy_state() == {"fresh": True})
        change = await anext(changes)
        # The stream tells of the lost holds first (alone, or with the snapshot if it
        # came before the consumer looked).
        assert change.holds_lost is not None
        assert (change.holds_lost.leases, change.holds_lost.locks) == (("a", "b"), ("job",))
        while not change.snapshot:
            assert not change.updates
            change = await anext(changes)
        assert change.updates == {"fresh": True}
        await client.set("c", 3)
        assert (await anext(changes)).updates == {"c": 3}
        assert await client.get("fresh") is True
        async with client.get_lock("job", timeout=1):
            pass
    finally:
        await changes.aclose()
        await client.close()
        await second.stop()


async def test_resume_after_reconnect_gets_only_the_delta(
    server: StateServer, transport: Transport
) -> None:
    """A broken session (not a server restart) resumes from the last revision seen."""
    client = AsyncClient(transport.url(server), backoff_initial=0.01)
    await client.connect()
    writer = AsyncClient(transport.url(server))
    await writer.connect()
    try:
        await writer.update({"a": 1, "b": 2})
        async with client.subscribe() as changes:
            assert (await anext(changes)).snapshot
            conn = client._conn
            assert conn is not None
            conn._lost(conn.generation, "test: stream broken")
            await writer.set("a", 10)
            await client.wait_connected(timeout=10)
            change = await anext(changes)
            assert not change.snapshot and change.updates == {"a": 10}
    finally:
        await client.close()
        await writer.close()


async def test_streams_end_when_nothing_will_resume_them(
    server: StateServer, transport: Transport
) -> None:
    closing = AsyncClient(transport.url(server))
    await closing.connect()
    ended = closing.subscribe()
    assert (await anext(ended)).snapshot
    await closing.close()
    with pytest.raises(StopAsyncIteration):
        await anext(ended)

    no_reconnect = AsyncClient(transport.url(server), reconnect=False)
    await no_reconnect.connect()
    try:
        failing = no_reconnect.subscribe()
        assert (await anext(failing)).snapshot
        waiting = asyncio.create_task(anext(failing))
        await server.stop()
        with pytest.raises(ConnectionLostError, match="lost the connection"):
            await waiting
    finally:
        await no_reconnect.close()


async def test_batches_are_split_to_fit_the_server_limit() -> None:
    async with (
        StateServer(address="127.0.0.1", port=0, max_message_bytes=1024) as small,
        AsyncClient("127.0.0.1", small.port) as client,
    ):
        assert client._conn is not None and client._conn.max_message_bytes == 1024
        value = "x" * 100
        revisions = await asyncio.gather(*(client.set(f"k{i}", value) for i in range(200)))
        assert len(set(revisions)) == 200
        with pytest.raises(MessageTooLargeError, match="over the server's limit of 1,024"):
            await client.set("big", "y" * 2000)
        assert await client.get("k199") == value


async def test_a_frozen_server_is_noticed_by_pings() -> None:
    """A server that stops answering (SIGSTOP: the TCP connection stays up) is declared lost."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from statehub.cli import main; main()",
        "serve",
        "--port",
        "0",
        "--tcp-port",
        str(port),
        "--keepalive",
        "0.5",
        "--no-http",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    client = AsyncClient("127.0.0.1", port, reconnect=False, connect_timeout=2)

    async def connected() -> bool:
        try:
            await client.connect()
        except ConnectionLostError:
            return False
        return True

    try:
        await eventually(connected, timeout=30)
        await client.set("a", 1)
        lost = asyncio.Event()
        client.connection_lost.add_callback(lambda reason: lost.set())
        process.send_signal(signal.SIGSTOP)
        async with asyncio.timeout(10):
            await lost.wait()
        with pytest.raises(ConnectionLostError, match="did not answer a ping"):
            await client.get("a")
    finally:
        process.kill()
        await process.wait()
        await client.close()


async def test_a_server_that_never_answers_times_out_at_connect() -> None:
    async def accept_and_ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; the client gives up by itself
        writer.close()

    silent = await asyncio.start_server(accept_and_ignore, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        client = AsyncClient("127.0.0.1", port, connect_timeout=0.3)
        with pytest.raises(ConnectionLostError, match=r"no answer within 0\.3 s"):
            await client.connect()
    finally:
        silent.close()


async def test_a_restarted_server_ahead_of_the_client_gives_a_snapshot_not_a_delta() -> None:
    """Revisions of another history (epoch) never resume: the mirror is replaced."""
    first = StateServer(address="127.0.0.1", port=0)
    await first.start()
    port = first.port
    client = AsyncClient("127.0.0.1", port, backoff_initial=0.02, backoff_max=0.2)
    await client.connect()
    await client.update({"old": 1})
    await client.subscribe_all_state_updates(0)
    await eventually(lambda: client.copy_state() == {"old": 1})
    await first.stop()
    await eventually(lambda: not client.connected)

    second = TCP.server(port)
    for n in range(5):  # this history is already past the revision the client saw
        second.state.update_state(None, DictionaryChange({f"new{n}": n}))
    await second.start()
    try:
        await client.wait_connected(timeout=10)
        expected = {f"new{n}": n for n in range(5)}
        await eventually(lambda: client.copy_state() == expected)
    finally:
        await client.close()
        await second.stop()


async def test_bad_intervals_are_refused_before_anything_is_sent(client: AsyncClient) -> None:
    with pytest.raises(ValueError, match="interval must be a finite number of seconds >= 0"):
        client.subscribe(interval=-1)
    with pytest.raises(ValueError, match="got inf"):
        await client.subscribe_all_state_updates(math.inf)
    assert client.copy_state() == {}


async def test_aclose_ends_the_client_and_its_streams_as_close_does(server: StateServer) -> None:
    client = AsyncClient("127.0.0.1", server.port)
    await client.connect()
    changes = client.subscribe()
    await changes.start()
    await client.aclose()
    assert not client.connected
    with pytest.raises(StopAsyncIteration):
        await anext(changes)
