"""No client can hurt another: sessions always clean up, requests get exactly one reply,
hostile arguments get clear errors, and what one session holds is bounded."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import textwrap
import warnings
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import struct_pb2

from statehub import DictionaryChange, StateDictionary, StateServer
from statehub.errors import RequestCancelledError
from statehub.protocol import SESSION_PATH, decode_batch, encode_batch
from statehub.server.limits import LimitExceededError, SessionLimits
from support import nanover_modules
from support.polling import DEADLINE, eventually
from support.raw_session import GatedStore, RawSession, RemoteError, connected, running_server

# NanoVer's own module names (as a NanoVer client has them), next to statehub's.
state_service_pb2, state_service_pb2_grpc, _, _ = nanover_modules.load()

# -- sessions that always clean up -------------------------------------------------------


async def _half_close_then_wait(session: RawSession, channel: grpc.aio.Channel) -> None:
    await session.call.done_writing()
    await asyncio.wait_for(session._reader, DEADLINE)


async def _half_close_then_cancel(session: RawSession, channel: grpc.aio.Channel) -> None:
    await session.call.done_writing()
    session.call.cancel()


async def _cancel(session: RawSession, channel: grpc.aio.Channel) -> None:
    session.call.cancel()


async def _half_close_then_drop_channel(session: RawSession, channel: grpc.aio.Channel) -> None:
    await session.call.done_writing()
    await channel.close(grace=None)


async def _drop_channel(session: RawSession, channel: grpc.aio.Channel) -> None:
    await channel.close(grace=None)


ENDINGS: list[Callable[[RawSession, grpc.aio.Channel], Awaitable[None]]] = [
    _half_close_then_wait,
    _half_close_then_cancel,
    _cancel,
    _half_close_then_drop_channel,
    _drop_channel,
]
ROUNDS_PER_ENDING = 60


async def _session_that_holds_everything(
    server: StateServer, index: int, end: Callable[..., Awaitable[None]]
) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    session = RawSession(channel)
    try:
        await session.hello()
        await session.request("leases", acquire={f"lease/{index}": None})
        await session.request("lock", key=f"lock/{index % 7}", exclusive=False, owner="o")
        await session.subscribe(interval=0)
        waiting = await session.send("lock", key="held", exclusive=True, owner="w")
        await session.request("ping")  # the lock wait above is queued by now
        assert not session._future(waiting).done()
        await end(session, channel)
    finally:
        session._reader.cancel()
        await asyncio.gather(session._reader, return_exceptions=True)
        await channel.close(grace=None)


async def test_every_way_a_stream_ends_releases_everything() -> None:
    async with running_server() as server:
        await server.locks.acquire("held", "someone else", exclusive=True)
        for round_number in range(ROUNDS_PER_ENDING):
            await asyncio.gather(
                *(
                    _session_that_holds_everything(server, round_number * 10 + i, end)
                    for i, end in enumerate(ENDINGS)
                )
            )
        await eventually(lambda: not server.hub.sessions)
        assert server.state.leases() == []
        assert not await server.locks.can_acquire("held", exclusive=False)  # still the other's
        await server.locks.release("held", "someone else", exclusive=True)
        for key in ("held", *(f"lock/{i}" for i in range(7))):
            assert await server.locks.can_acquire(key, exclusive=True), key


CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import grpc
    from statehub.protocol import SESSION_PATH, decode_batch, encode_batch

    async def main():
        channel = grpc.aio.insecure_channel(sys.argv[1])
        call = channel.stream_stream(SESSION_PATH)()
        await call.write(encode_batch([
            {"id": 1, "op": "hello", "token": None, "client": "doomed"},
            {"id": 2, "op": "leases", "acquire": {"doomed/" + sys.argv[2]: None}},
            {"id": 3, "op": "lock", "key": "doomed", "exclusive": False, "owner": ""},
        ]))
        replies = 0
        while replies < 3:
            replies += len(decode_batch(await call.read()))
        if sys.argv[3] == "half-close":
            await call.done_writing()
        print("holding", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_killed_clients_leave_nothing_behind() -> None:
    async with running_server() as server:
        for index, how in enumerate(["plain", "half-close"] * 3):
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CLIENT_SCRIPT,
                f"127.0.0.1:{server.grpc_port}",
                str(index),
                how,
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                assert client.stdout is not None
                line = await asyncio.wait_for(client.stdout.readline(), 60)
                assert line.strip() == b"holding"
                if how == "plain":  # a half-closed session ends (and releases) on its own
                    assert any(lease.key == f"doomed/{index}" for lease in server.state.leases())
            finally:
                client.send_signal(signal.SIGKILL)
                await client.wait()
        # A killed process's socket is closed by the kernel: the server sees it at once.
        await eventually(lambda: not server.hub.sessions)
        assert server.state.leases() == []
        assert await server.locks.can_acquire("doomed", exclusive=True)


# -- every request gets exactly one reply ------------------------------------------------


async def test_cancel_in_the_same_frame_answers_both_requests() -> None:
    async with running_server() as server, connected(server) as session:
        await server.locks.acquire("busy", "other", exclusive=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lock_id, cancel_id = await session.send_many(
                [
                    {"op": "lock", "key": "busy", "exclusive": True, "owner": ""},
                    {"op": "cancel", "request": session._next_id},
                ]
            )
            assert await session.reply(cancel_id) == {"cancelled": True}
            with pytest.raises(RemoteError) as cancelled:
                await session.reply(lock_id)
            gc.collect()
        assert isinstance(cancelled.value.error, RequestCancelledError)
        assert cancelled.value.status == "CANCELLED"
        assert not [w for w in caught if "never awaited" in str(w.message)]
        await server.locks.release("busy", "other", exclusive=True)
        assert await server.locks.can_acquire("busy", exclusive=True)  # the wait left no trace


async def test_an_update_waiting_to_be_durable_is_not_cancelled_but_answered_as_applied() -> None:
    store = GatedStore()
    async with (
        running_server(state=StateDictionary(store=store)) as server,
        connected(server) as session,
    ):
        if True:
            update_id, cancel_id = await session.send_many(
                [
                    {"op": "update", "updates": {"k": 1}},
                    {"op": "cancel", "request": session._next_id},
                ]
            )
            assert await session.reply(cancel_id) == {"cancelled": False}
            store.make_durable(1)
            assert await session.reply(update_id) == {"revision": 1}
            assert server.copy_state() == {"k": 1}


async def test_a_request_id_still_waiting_cannot_be_reused() -> None:
    async with running_server() as server, connected(server) as session:
        await server.locks.acquire("busy", "other", exclusive=True)
        await session.call.write(
            encode_batch(
                [
                    {"id": 900, "op": "lock", "key": "busy", "exclusive": True, "owner": ""},
                    {"id": 900, "op": "ping"},
                ]
            )
        )
        with pytest.raises(RemoteError, match="still waiting"):
            await session.reply(900)


# -- errors that say what was wrong ------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "arguments", "field"),
    [
        ("subscribe", {"interval": 2**1100}, "interval"),
        ("lock", {"key": "k", "exclusive": True, "owner": "", "timeout": 2**1100}, "timeout"),
        ("subscribe", {"interval": float("nan")}, "interval"),
        ("lock", {"key": "k", "exclusive": True, "owner": "", "timeout": -1}, "timeout"),
        ("subscribe", {"interval": "soon"}, "interval"),
    ],
)
async def test_out_of_range_numbers_are_invalid_arguments(
    op: str, arguments: dict[str, object], field: str
) -> None:
    async with running_server() as server, connected(server) as session:
        with pytest.raises(RemoteError) as refused:
            await session.request(op, **arguments)
        assert refused.value.status == "INVALID_ARGUMENT"
        assert field in str(refused.value.error)
        assert await session.request("ping") == {}  # the session goes on


async def test_a_frame_nested_beyond_the_decoder_limit_ends_only_that_session() -> None:
    async with running_server() as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            call = channel.stream_stream(SESSION_PATH)()
            await call.write(b"\x91" * 2000 + b"\x01")
            [last] = decode_batch(await call.read())  # the session's last message says why
            assert last["id"] is None and last["error"]["type"] == "ProtocolError"
            assert "nested 1024 levels" in last["error"]["message"]
            with pytest.raises(grpc.aio.AioRpcError) as ended:  # then the call's status
                await call.read()
            assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "nested 1024 levels" in (ended.value.details() or "")
        async with connected(server) as other:
            assert await other.request("ping") == {}


# -- bounded per session -----------------------------------------------------------------


async def test_subscriptions_per_session_are_bounded() -> None:
    async with (
        running_server(limits=SessionLimits(max_subscriptions=3)) as server,
        connected(server) as session,
    ):
        ids = await session.send_many([{"op": "subscribe", "interval": 0} for _ in range(5)])
        for request_id in ids[:3]:
            assert "sub" in await session.reply(request_id)
        for request_id in ids[3:]:
            with pytest.raises(RemoteError) as refused:
                await session.reply(request_id)
            assert refused.value.status == "RESOURCE_EXHAUSTED"
            assert isinstance(refused.value.error, LimitExceededError)
            assert "max_subscriptions=3" in str(refused.value.error)
        await session.request("unsubscribe", sub=1)
        assert "sub" in await session.request("subscribe", interval=0)


async def test_waiting_requests_per_session_are_bounded() -> None:
    async with (
        running_server(limits=SessionLimits(max_pending_requests=2)) as server,
        connected(server) as session,
    ):
        await server.locks.acquire("busy", "other", exclusive=True)
        waits = await session.send_many(
            [{"op": "lock", "key": "busy", "exclusive": True, "owner": str(i)} for i in range(3)]
        )
        with pytest.raises(RemoteError, match="max_pending_requests=2") as refused:
            await session.reply(waits[2])
        assert refused.value.status == "RESOURCE_EXHAUSTED"
        await server.locks.release("busy", "other", exclusive=True)
        assert set(await session.reply(waits[0])) == {"fence"}


async def test_leases_per_session_are_bounded_and_all_or_nothing() -> None:
    async with (
        running_server(limits=SessionLimits(max_leases=3)) as server,
        connected(server) as session,
    ):
        await session.request("leases", acquire={"a": None, "b": None})
        with pytest.raises(RemoteError, match="max_leases=3") as refused:
            await session.request("leases", acquire={"c": None, "d": None})
        assert refused.value.status == "RESOURCE_EXHAUSTED"
        assert sorted(lease.key for lease in server.state.leases()) == ["a", "b"]
        await session.request("leases", acquire={"c": None}, release=["a"])
        await session.request("leases", acquire={"d": None})
        assert sorted(lease.key for lease in server.state.leases()) == ["b", "c", "d"]


async def test_a_client_that_does_not_read_is_held_to_its_byte_limit() -> None:
    limit = 1024 * 1024
    reply_bytes = 150_000
    async with running_server(limits=SessionLimits(max_queued_bytes=limit)) as server:
        server.update_state(None, DictionaryChange({"big": list(range(50_000))}))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            call = channel.stream_stream(SESSION_PATH)()
            requests = [{"id": 0, "op": "hello", "token": None, "client": "greedy"}]
            requests += [{"id": i, "op": "get", "keys": None} for i in range(1, 401)]
            for start in range(0, len(requests), 50):  # never reading any reply meanwhile
                await asyncio.wait_for(call.write(encode_batch(requests[start : start + 50])), 10)
            # the writes may all sit in gRPC's buffers before the server's handler starts
            (hub_session,) = await eventually(
                lambda: list(server.hub.sessions), "the session on the server"
            )
            peak = 0
            for _ in range(50):  # give the server every chance to run past its limit
                peak = max(peak, hub_session.queued_bytes)
                await asyncio.sleep(0.01)
            assert 0 < peak <= limit + 2 * reply_bytes
            replies = 0  # nothing was dropped: every request has its reply
            while replies < len(requests):
                replies += len(decode_batch(await asyncio.wait_for(call.read(), DEADLINE)))
            assert replies == len(requests)
            call.cancel()


# -- NanoVer subscribers and large states ------------------------------------------------


async def test_nanover_subscribers_get_large_states_in_messages_they_accept() -> None:
    async with running_server(max_message_bytes=16 * 1024 * 1024) as server:
        big = "x" * (2 * 1024 * 1024)
        server.update_state(None, DictionaryChange({"a": big, "b": big, "c": big}))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = state_service_pb2_grpc.StateStub(channel)
            updates = stub.SubscribeStateUpdates(
                state_service_pb2.SubscribeStateUpdatesRequest(update_interval=0)
            )
            seen: dict[str, str] = {}
            while len(seen) < 3:
                update = await asyncio.wait_for(updates.read(), DEADLINE)
                assert update.ByteSize() < 4 * 1024 * 1024
                seen.update(
                    {key: value.string_value for key, value in update.changed_keys.fields.items()}
                )
            assert seen == {"a": big, "b": big, "c": big}
            updates.cancel()


@pytest.mark.parametrize(
    "method",
    [
        "/nanover.protocol.state.State/UpdateState",
        "/nanover.protocol.state.State/UpdateLocks",
        "/nanover.protocol.command.Command/RunCommand",
    ],
)
async def test_malformed_nanover_requests_are_invalid_arguments(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server() as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary(method)(b"\xff\xff\xff\x01garbage")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed nanover.protocol." in (refused.value.details() or "")
    assert not [record for record in caplog.records if record.exc_info]


async def test_a_nanover_value_null_removes_and_a_struct_round_trips() -> None:
    # Guards the raw-bytes parsing path: well-formed requests behave as before.
    async with running_server() as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = state_service_pb2_grpc.StateStub(channel)
            changed = struct_pb2.Struct()
            changed.update({"k": {"x": 1.5}})
            reply = await stub.UpdateState(
                state_service_pb2.UpdateStateRequest(
                    access_token="t", update=state_service_pb2.StateUpdate(changed_keys=changed)
                )
            )
            assert reply.success
        assert server.copy_state() == {"k": {"x": 1.5}}
