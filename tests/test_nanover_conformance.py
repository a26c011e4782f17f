"""NanoVer's gRPC-era services, driven by NanoVer-shaped stubs (``nanover.protocol.*``).

A NanoVer client sees what it saw with NanoverServer: a snapshot then changes, null
meaning removal, every number a double, ``success=False`` for keys leased by another
token, and the command service with ``commands/list``.
"""

from __future__ import annotations

import asyncio
import gc
import math
import weakref
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from statehub import DictionaryChange, StateDictionary, StateServer
from statehub.server import nanover_compat
from support import nanover_modules
from support.polling import eventually
from support.raw_session import GatedStore, connected, running_server

DEADLINE = 10.0
# NanoVer's own module names, loaded in this process next to statehub, as when migrating.
state_service_pb2, state_service_pb2_grpc, command_service_pb2, command_service_pb2_grpc = (
    nanover_modules.load()
)


def _struct(mapping: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(mapping)
    return struct


def _plain(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Struct -> dict with None for null (protobuf's own conversion, as NanoVer clients use)."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(struct)


class NanoverClient:
    """The calls a NanoVer client makes, on generated stubs."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.state = state_service_pb2_grpc.StateStub(channel)
        self.command = command_service_pb2_grpc.CommandStub(channel)
        self.token = token

    async def update(self, changes: dict[str, Any]) -> bool:
        request = state_service_pb2.UpdateStateRequest(
            access_token=self.token,
            update=state_service_pb2.StateUpdate(changed_keys=_struct(changes)),
        )
        return bool((await self.state.UpdateState(request)).success)

    async def locks(self, lock_keys: dict[str, Any]) -> bool:
        request = state_service_pb2.UpdateLocksRequest(
            access_token=self.token, lock_keys=_struct(lock_keys)
        )
        return bool((await self.state.UpdateLocks(request)).success)

    async def run(self, name: str, **arguments: Any) -> dict[str, Any]:
        message = command_service_pb2.CommandMessage(name=name, arguments=_struct(arguments))
        return _plain((await self.command.RunCommand(message)).result)


async def _nanover(server: StateServer, token: str) -> AsyncIterator[NanoverClient]:
    # A connection of its own (grpc would otherwise share one between channels).
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.grpc_port}", options=options
    ) as channel:
        yield NanoverClient(channel, token)


@pytest.fixture
async def server() -> AsyncIterator[StateServer]:
    async with running_server() as running:
        yield running


@pytest.fixture
async def alice(server: StateServer) -> AsyncIterator[NanoverClient]:
    async for client in _nanover(server, "alice"):
        yield client


@pytest.fixture
async def bob(server: StateServer) -> AsyncIterator[NanoverClient]:
    async for client in _nanover(server, "bob"):
        yield client


async def _next(stream: Any) -> dict[str, Any]:
    update = await asyncio.wait_for(stream.read(), DEADLINE)
    assert update is not grpc.aio.EOF
    return _plain(update.changed_keys)


async def test_subscribe_gives_snapshot_then_changes_with_null_for_removal(
    server: StateServer, alice: NanoverClient
) -> None:
    server.update_state(None, DictionaryChange({"a": 1, "b": "x"}))
    stream = alice.state.SubscribeStateUpdates(
        state_service_pb2.SubscribeStateUpdatesRequest(update_interval=1 / 30)
    )
    assert await _next(stream) == {"a": 1.0, "b": "x"}
    assert await alice.update({"a": {"nested": [1, True, None]}, "b": None})
    assert await _next(stream) == {"a": {"nested": [1.0, True, None]}, "b": None}
    assert server.copy_state() == {"a": {"nested": [1.0, True, None]}}
    stream.cancel()


async def test_numbers_are_doubles_on_this_protocol(
    server: StateServer, alice: NanoverClient
) -> None:
    assert await alice.update({"n": 1})
    assert type(server.state.get("n")) is float
    server.update_state(None, DictionaryChange({"i": 2, "huge": 10**300}))
    stream = alice.state.SubscribeStateUpdates(
        state_service_pb2.SubscribeStateUpdatesRequest(update_interval=0)
    )
    update = await asyncio.wait_for(stream.read(), DEADLINE)
    fields = update.changed_keys.fields
    assert fields["i"].WhichOneof("kind") == "number_value" and fields["i"].number_value == 2.0
    assert fields["huge"].number_value == 1e300  # ints beyond a double's range are refused
    stream.cancel()


async def test_bytes_reach_this_protocol_as_the_base64_stand_in(
    server: StateServer, alice: NanoverClient
) -> None:
    """A Struct has no bytes: a bytes value (a WebSocket client's) arrives as the one
    stand-in of core.values, never as something that looks like another value."""
    server.update_state(None, DictionaryChange({"packed": b"\x00\xff", "in": [b"\x01"]}))
    stream = alice.state.SubscribeStateUpdates(
        state_service_pb2.SubscribeStateUpdatesRequest(update_interval=0)
    )
    assert await _next(stream) == {"packed": {"$bytes": "AP8="}, "in": [{"$bytes": "AQ=="}]}
    stream.cancel()


async def test_locks_refuse_other_tokens_and_release_with_null(
    server: StateServer, alice: NanoverClient, bob: NanoverClient
) -> None:
    assert await alice.locks({"k": 10})
    assert not await bob.update({"k": "bob", "other": 1})
    assert "other" not in server.copy_state()  # all or nothing
    assert not await bob.locks({"k": 5})
    assert await alice.update({"k": "alice"})
    assert await alice.locks({"k": None})
    assert await bob.update({"k": "bob"})
    assert server.state.get("k") == "bob"


async def test_a_token_owns_its_leases_across_connections_as_in_nanover(
    server: StateServer, alice: NanoverClient
) -> None:
    async with connected(server, hello=False) as session:
        await session.hello("alice")  # a session's hello token names no lease owner
        await session.request("leases", acquire={"shared": None})
        assert not await alice.update({"shared": 1})
    assert await alice.locks({"mine": 60})
    async for reconnected in _nanover(server, "alice"):  # a new connection, the same token
        assert await reconnected.update({"mine": "still mine"})
        assert await reconnected.locks({"mine": None})
    assert "mine" not in {lease.key for lease in server.state.leases()}
    async for other in _nanover(server, "bob"):
        assert await other.update({"mine": "free now"})


@pytest.mark.parametrize(
    ("lock_keys", "text"),
    [({"k": math.nan}, "nan"), ({"k": "ten"}, "string")],
)
async def test_bad_lease_values_abort_with_invalid_argument(
    server: StateServer, alice: NanoverClient, lock_keys: dict[str, Any], text: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await alice.locks(lock_keys)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in (failed.value.details() or "")
    assert not server.state.leases()


@pytest.mark.parametrize("seconds", [0, -1, -math.inf])
async def test_a_lease_of_zero_or_negative_seconds_expires_at_once(
    server: StateServer, alice: NanoverClient, bob: NanoverClient, seconds: float
) -> None:
    assert await alice.locks({"k": seconds})  # NanoVer accepted it, as an expired lease
    assert not server.state.leases()
    assert await bob.update({"k": "bob"})


async def test_bad_update_interval_aborts(alice: NanoverClient) -> None:
    stream = alice.state.SubscribeStateUpdates(
        state_service_pb2.SubscribeStateUpdatesRequest(update_interval=-1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stream.read()
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_request_over_the_size_limit_is_refused() -> None:
    async with running_server(max_message_bytes=10_000) as server:
        async for client in _nanover(server, "big"):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await client.update({"big": "x" * 20_000})
            assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "10000" in (failed.value.details() or "")
            assert server.state.revision == 0
            assert await client.update({"small": 1})


async def test_commands(server: StateServer, alice: NanoverClient) -> None:
    def fail() -> None:
        raise RuntimeError("boom")

    server.register_command("add", lambda a, b: {"sum": a + b}, {"a": 1, "b": 2})
    server.register_command("fail", fail)
    reply = await alice.command.GetCommands(command_service_pb2.GetCommandsRequest())
    listed = {command.name: _plain(command.arguments) for command in reply.commands}
    assert listed == {"commands/list": {}, "add": {"a": 1.0, "b": 2.0}, "fail": {}}
    assert await alice.run("add", b=5) == {"sum": 6.0}
    assert (await alice.run("commands/list"))["list"]["add"] == {"a": 1.0, "b": 2.0}

    for name, arguments, status, text in [
        ("missing", {}, grpc.StatusCode.NOT_FOUND, "missing"),
        ("add", {"c": 1}, grpc.StatusCode.INVALID_ARGUMENT, "add"),
        ("fail", {}, grpc.StatusCode.UNKNOWN, "boom"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await alice.run(name, **arguments)
        assert failed.value.code() == status
        assert text in (failed.value.details() or "")
    assert await alice.run("add") == {"sum": 3.0}  # still serving


async def test_update_state_answers_once_the_change_is_durable() -> None:
    store = GatedStore()
    async with running_server(state=StateDictionary(store=store)) as server:
        async for client in _nanover(server, "durable"):
            answer = asyncio.ensure_future(client.update({"k": 1}))
            await eventually(lambda: store.committed == 1)
            assert not answer.done()
            assert server.state.get("k") is None  # readers see a change once it is durable
            store.make_durable(1)
            assert await asyncio.wait_for(answer, DEADLINE)
            assert server.state.get("k") == 1.0


async def test_subscribers_at_one_interval_share_each_encoded_change(
    server: StateServer, alice: NanoverClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscribers with the same interval and read rights are members of one fan-out
    group: a change is encoded to ``StateUpdate`` messages once, not once per subscriber."""
    encoded: list[dict[str, Any]] = []

    def counting(updates: Any, removals: set[str]) -> Any:
        encoded.append(dict(updates))
        return state_updates(updates, removals)

    state_updates = nanover_compat._state_updates
    monkeypatch.setattr(nanover_compat, "_state_updates", counting)
    server.update_state(None, DictionaryChange({"k": -1}))
    request = state_service_pb2.SubscribeStateUpdatesRequest(update_interval=0.01)
    streams = [alice.state.SubscribeStateUpdates(request) for _ in range(3)]
    for stream in streams:
        assert await _next(stream) == {"k": -1.0}
    # Each subscriber joins its group once its own view has caught up: a change or two
    # may still be encoded by those not in it yet.
    for value in range(20):
        encoded.clear()
        assert await alice.update({"k": value})
        for stream in streams:
            assert await _next(stream) == {"k": float(value)}
        if len(encoded) == 1:
            break
    assert encoded == [{"k": float(value)}]
    for stream in streams:
        stream.cancel()


async def test_calls_at_many_intervals_leave_no_fan_out_groups_behind(
    server: StateServer, alice: NanoverClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each update interval asked for has its fan-out groups while a call runs at it: a
    client trying interval after interval leaves nothing behind when its calls end."""
    families: weakref.WeakSet[Any] = weakref.WeakSet()

    class Recorded(nanover_compat.FanoutGroups):  # type: ignore[type-arg]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            families.add(self)

    monkeypatch.setattr(nanover_compat, "FanoutGroups", Recorded)
    server.update_state(None, DictionaryChange({"k": -1}))
    streams = []
    for n in range(20):
        request = state_service_pb2.SubscribeStateUpdatesRequest(update_interval=0.01 + n / 1000)
        streams.append(alice.state.SubscribeStateUpdates(request))
        assert await _next(streams[-1]) == {"k": -1.0}
    assert len(families) == 20
    for stream in streams:
        stream.cancel()
    del stream, streams

    def all_gone() -> bool:
        gc.collect()
        return not families

    await eventually(all_gone, "every interval's fan-out groups gone")


async def test_a_subscriber_that_does_not_read_gets_every_change_coalesced_in_order(
    server: StateServer, alice: NanoverClient, bob: NanoverClient
) -> None:
    """A client that falls behind leaves the shared stream and catches up alone: the
    latest value comes last, after no value it had already got and no older value."""
    request = state_service_pb2.SubscribeStateUpdatesRequest(update_interval=0)
    reader = alice.state.SubscribeStateUpdates(request)
    idle = bob.state.SubscribeStateUpdates(request)
    server.update_state(None, DictionaryChange({"n": -1}))
    assert (await _next(reader))["n"] == (await _next(idle))["n"] == -1.0
    padding = "x" * 1_000_000  # fills the idle client's flow-control window in a few changes
    last = 30
    for value in range(last + 1):
        assert await alice.update({"n": value, "pad": padding})
        assert (await _next(reader))["n"] == float(value)
    seen: list[float] = []
    while not seen or seen[-1] != float(last):
        seen.append((await _next(idle))["n"])
    assert seen == sorted(set(seen))  # in order, no duplicate
    assert len(seen) < last + 1  # it fell behind: what it missed came coalesced
    reader.cancel()
    idle.cancel()


async def test_closing_the_server_ends_subscription_streams() -> None:
    server = StateServer(address="127.0.0.1", port=0)
    await server.start()
    async for client in _nanover(server, "watcher"):
        server.update_state(None, DictionaryChange({"k": 1}))
        stream = client.state.SubscribeStateUpdates(
            state_service_pb2.SubscribeStateUpdatesRequest(update_interval=0)
        )
        assert await _next(stream) == {"k": 1.0}
        await asyncio.wait_for(server.stop(), DEADLINE)
        assert await asyncio.wait_for(stream.code(), DEADLINE) == grpc.StatusCode.OK
