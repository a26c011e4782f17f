"""The session protocol against a real server on loopback, driven by a raw gRPC stream."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from statehub import (
    DictionaryChange,
    ResourceLockedError,
    SQLiteStore,
    StateDictionary,
)
from statehub.errors import (
    CommandFailedError,
    LockFailedError,
    LockNotOwnedError,
    LockUpgradeError,
    MessageTooLargeError,
    ProtocolError,
    RequestCancelledError,
)
from statehub.protocol import SESSION_PATH, encode_batch
from support.polling import eventually
from support.raw_session import GatedStore, RemoteError, connected, running_server


async def test_hello_gives_session_token_and_limits() -> None:
    async with (
        running_server(max_message_bytes=50_000) as server,
        connected(server, hello=False) as session,
    ):
        reply = await session.hello()
        assert reply["token"] and reply["session"]
        assert reply["revision"] == 0
        assert reply["max_message_bytes"] == 50_000
        assert reply["keepalive_s"] == server.keepalive_time
        mine = await session.request("ping")
        assert mine == {}


async def test_hello_must_come_first_and_a_named_token_does_not_name_the_owner() -> None:
    async with running_server() as server, connected(server, hello=False) as session:
        with pytest.raises(RemoteError) as refused:
            await session.request("get", keys=None)
        assert refused.value.status == "INVALID_ARGUMENT"
        assert isinstance(refused.value.error, ProtocolError)
        assert "hello" in str(refused.value.error)
        reply = await session.hello("my-token")
        assert reply["token"] == f"{reply['session']}:anyone"
        with pytest.raises(RemoteError, match="already"):
            await session.hello("again")


async def test_update_and_get_keep_types() -> None:
    async with running_server() as server, connected(server) as session:
        value = {"int": 1, "float": 1.0, "big": 2**80, "nan": math.nan, "list": [None, True, "s"]}
        reply = await session.request("update", updates={"a": value, "b": 2}, removals=[])
        assert reply == {"revision": 1}
        got = await session.request("get", keys=["a", "missing"])
        assert got["revision"] == 1
        assert set(got["values"]) == {"a"}
        a = got["values"]["a"]
        assert type(a["int"]) is int and type(a["float"]) is float
        assert a["big"] == 2**80 and math.isnan(a["nan"]) and a["list"] == [None, True, "s"]
        assert (await session.request("update", removals=["b"]))["revision"] == 2
        everything = await session.request("get", keys=None)
        assert set(everything["values"]) == {"a"}
        assert server.copy_state()["a"]["big"] == 2**80


async def test_subscription_starts_with_a_snapshot_then_coalesced_deltas() -> None:
    async with running_server() as server, connected(server) as session:
        server.update_state(None, DictionaryChange({"x": 0, "gone": 1}))
        interval = 0.3
        sub = await session.subscribe(interval=interval)
        snapshot = await session.next_batch(sub)
        first_at = time.monotonic()
        assert snapshot["snapshot"] is True
        assert snapshot["updates"] == {"x": 0, "gone": 1} and snapshot["removals"] == []
        assert snapshot["revision"] == 1
        # One frame, so that even a slow machine cannot flush between two of the updates.
        ids = await session.send_many(
            [*({"op": "update", "updates": {"x": i}} for i in range(1, 6)),
             {"op": "update", "removals": ["gone"]}]
        )  # fmt: skip
        revisions = [(await session.reply(i))["revision"] for i in ids]
        delta = await session.next_batch(sub)
        assert time.monotonic() - first_at >= interval * 0.9  # paced, not sent at once
        assert delta["snapshot"] is False
        assert delta["updates"] == {"x": 5} and delta["removals"] == ["gone"]
        assert delta["revision"] == revisions[-1]
        assert session.batches[sub].empty()


async def test_empty_state_still_gets_a_snapshot() -> None:
    async with running_server() as server, connected(server) as session:
        sub = await session.subscribe()
        snapshot = await session.next_batch(sub)
        assert snapshot == {
            "sub": sub,
            "revision": 0,
            "snapshot": True,
            "updates": {},
            "removals": [],
        }


async def test_prefix_filters_snapshot_and_deltas() -> None:
    async with running_server() as server, connected(server) as session:
        server.update_state(None, DictionaryChange({"a/1": 1, "b/1": 1}))
        sub = await session.subscribe(prefix="a/")
        assert (await session.next_batch(sub))["updates"] == {"a/1": 1}
        await session.request("update", updates={"b/2": 2})
        await session.request("update", updates={"a/2": 2}, removals=["a/1", "b/1"])
        delta = await session.next_batch(sub)
        assert delta["updates"] == {"a/2": 2} and delta["removals"] == ["a/1"]
        assert session.batches[sub].empty()


async def test_since_resumes_with_only_what_changed() -> None:
    async with running_server() as server, connected(server) as session:
        await session.request("update", updates={"a": 1, "b": 1, "c": 1})
        seen = (await session.request("update", updates={"a": 2}))["revision"]
        await session.request("update", updates={"b": 2}, removals=["c"])
        epoch = server.state.epoch
        sub = await session.subscribe(since=seen, epoch=epoch)
        delta = await session.next_batch(sub)
        assert delta["snapshot"] is False
        assert delta["updates"] == {"b": 2} and delta["removals"] == ["c"]
        assert delta["revision"] == server.state.revision

        current = await session.subscribe(since=server.state.revision, epoch=epoch)
        nothing_new = await session.next_batch(current)
        assert nothing_new["snapshot"] is False and nothing_new["updates"] == {}

        future = await session.subscribe(since=server.state.revision + 100, epoch=epoch)
        snapshot = await session.next_batch(future)
        assert snapshot["snapshot"] is True and snapshot["updates"] == {"a": 2, "b": 2}


@pytest.mark.parametrize("epoch", [None, "an-epoch-of-another-history"])
async def test_a_since_of_another_epoch_or_of_none_named_gets_a_snapshot(
    epoch: str | None,
) -> None:
    async with running_server() as server, connected(server) as session:
        await session.request("update", updates={"a": 1, "b": 1})
        seen = (await session.request("update", updates={"a": 2}))["revision"]
        await session.request("update", updates={"b": 2})
        sub = await session.subscribe(since=seen, epoch=epoch)
        batch = await session.next_batch(sub)
        assert batch["snapshot"] is True and batch["updates"] == {"a": 2, "b": 2}


async def test_unsubscribe_stops_batches() -> None:
    async with running_server() as server, connected(server) as session:
        sub = await session.subscribe()
        await session.next_batch(sub)
        assert await session.request("unsubscribe", sub=sub) == {}
        other = await session.subscribe()
        await session.next_batch(other)
        await session.request("update", updates={"k": 1})
        await session.next_batch(other)
        assert session.batches[sub].empty()
        with pytest.raises(RemoteError) as unknown:
            await session.request("unsubscribe", sub=sub)
        assert unknown.value.status == "NOT_FOUND"


async def test_leases_block_others_and_are_released_on_disconnect() -> None:
    async with running_server() as server, connected(server) as other:
        async with connected(server) as holder:
            await holder.request("leases", acquire={"k": None, "j": 30}, release=[])
            leases = (await holder.request("list_leases"))["leases"]
            assert [[key, mine] for key, mine, _ in leases] == [["j", True], ["k", True]]
            with pytest.raises(RemoteError) as locked:
                await other.request("update", updates={"k": 1, "free": 1})
            assert locked.value.status == "FAILED_PRECONDITION"
            assert isinstance(locked.value.error, ResourceLockedError)
            assert locked.value.error.keys == frozenset({"k"})
            assert "free" not in server.copy_state()  # nothing partially applied
            theirs = (await other.request("list_leases"))["leases"]
            assert all(not mine for _, mine, _ in theirs)
        await eventually(lambda: not server.state.leases())
        await other.request("update", updates={"k": 1})


async def test_lease_and_lock_listings_name_holders_and_waiters() -> None:
    """Who holds a lease, who holds and who waits for a lock, since when, with which
    fencing token (the dashboard's locks and leases panels)."""
    async with (
        running_server() as server,
        connected(server) as holder,
        connected(server) as waiter,
    ):
        await holder.request("leases", acquire={"k": 30}, release=[])
        reply = await waiter.request("list_leases")
        holder_id = (await holder.request("list_sessions"))["sessions"]
        mine = next(s["session"] for s in holder_id if s["you"])
        assert reply["holders"] == {"k": {"session": mine, "client": "tests", "identity": "anyone"}}
        before = time.time()
        fence = (await holder.request("lock", key="L", exclusive=True, owner="job"))["fence"]
        waiting = await waiter.send("lock", key="L", exclusive=False, owner="w", timeout=30)

        async def waited_for() -> list[dict[str, Any]] | None:
            locks: list[dict[str, Any]] = (await waiter.request("list_locks"))["locks"]
            return locks if locks[0]["waiters"] else None

        (lock,) = await eventually(waited_for, "a waiter listed on L")
        (held,) = lock["holders"]
        assert held["session"] == mine and held["owner"] == "job"
        assert held["fence"] == fence and before - 1 <= held["since"] <= time.time() + 1
        (queued,) = lock["waiters"]
        assert queued["owner"] == "w" and queued["mode"] == "shared"
        assert queued["client"] == "tests" and queued["session"] != mine
        await holder.request("unlock", key="L", exclusive=True, owner="job")
        assert (await waiter.reply(waiting))["fence"] > fence


async def test_naming_another_sessions_token_takes_none_of_its_leases() -> None:
    async with running_server() as server, connected(server, hello=False) as first:
        await first.hello("shared")
        async with connected(server, hello=False) as second:
            await second.hello("shared")
            await second.request("leases", acquire={"k": None})
            with pytest.raises(RemoteError) as refused:
                await first.request("update", updates={"k": 1})
            assert isinstance(refused.value.error, ResourceLockedError)
            await first.request("leases", release=["k"])  # not its lease: nothing
            assert [lease.key for lease in server.state.leases()] == ["k"]
        await eventually(lambda: not server.state.leases())  # released with its session
        await first.request("update", updates={"k": 1})


async def test_lock_waits_without_blocking_later_requests() -> None:
    async with running_server() as server, connected(server) as a, connected(server) as b:
        first = await a.request("lock", key="L", exclusive=True, timeout=None, owner="t1")
        assert (await b.request("test_lock", key="L", exclusive=False))["free"] is False
        waiting = await b.send("lock", key="L", exclusive=True, timeout=None, owner="t1")
        assert await b.request("ping") == {}  # answered while the lock is still waiting
        assert not b._future(waiting).done()
        await a.request("unlock", key="L", exclusive=True, owner="t1")
        assert (await b.reply(waiting))["fence"] > first["fence"]  # fencing tokens grow
        await b.request("unlock", key="L", exclusive=True, owner="t1")
        assert (await b.request("test_lock", key="L", exclusive=True))["free"] is True


async def test_shared_locks_and_owners_within_a_session() -> None:
    async with running_server() as server, connected(server) as a:
        await a.request("lock", key="R", exclusive=False, owner="reader1")
        await a.request("lock", key="R", exclusive=False, owner="reader2")
        assert (await a.request("test_lock", key="R", exclusive=False))["free"] is True
        assert (await a.request("test_lock", key="R", exclusive=True))["free"] is False
        with pytest.raises(RemoteError) as upgrade:
            await a.request("lock", key="R", exclusive=True, owner="reader1")
        assert upgrade.value.status == "FAILED_PRECONDITION"
        assert isinstance(upgrade.value.error, LockUpgradeError)
        with pytest.raises(RemoteError) as not_owned:
            await a.request("unlock", key="R", exclusive=False, owner="nobody")
        assert isinstance(not_owned.value.error, LockNotOwnedError)


async def test_lock_timeout_fails_with_aborted() -> None:
    async with running_server() as server, connected(server) as a, connected(server) as b:
        await a.request("lock", key="L", exclusive=False, owner="")
        with pytest.raises(RemoteError) as failed:
            await b.request("lock", key="L", exclusive=True, timeout=0.05, owner="")
        assert failed.value.status == "ABORTED"
        assert isinstance(failed.value.error, LockFailedError)
        assert "'L'" in str(failed.value.error)
        assert (await b.request("test_lock", key="L", exclusive=False))["free"] is True


async def test_rw_locks_are_released_when_the_holder_disconnects() -> None:
    async with running_server() as server, connected(server) as waiter:
        async with connected(server) as holder:
            await holder.request("lock", key="L", exclusive=True, owner="x")
            granted = await waiter.send("lock", key="L", exclusive=True, owner="y")
            await holder.request("ping")
            assert not waiter._future(granted).done()
        assert set(await waiter.reply(granted)) == {"fence"}


async def test_a_disconnected_waiter_leaves_no_trace() -> None:
    async with running_server() as server, connected(server) as holder:
        await holder.request("lock", key="L", exclusive=True, owner="")
        async with connected(server) as quitter:
            await quitter.send("lock", key="L", exclusive=True, owner="")
            await quitter.request("ping")
        await eventually(lambda: len(server.hub.sessions) == 1)
        await holder.request("unlock", key="L", exclusive=True, owner="")
        assert (await holder.request("test_lock", key="L", exclusive=True))["free"] is True


async def test_commands_over_the_session() -> None:
    async with running_server() as server, connected(server) as session:
        server.register_command("add", lambda a, b: {"sum": a + b}, {"a": 1, "b": 2})

        async def slow(gate: str) -> dict[str, str]:
            await asyncio.sleep(0)
            return {"gate": gate}

        server.register_command("slow", slow, {"gate": "open"})
        listed = (await session.request("commands"))["commands"]
        assert listed["add"] == {"a": 1, "b": 2} and "commands/list" in listed
        server.register_command("scale", lambda key, factor=2.0, *, note=None, **rest: {}, {})
        arguments = (await session.request("commands"))["arguments"]
        assert arguments["add"] == [["a", False, 1], ["b", False, 2]]
        assert arguments["scale"] == [
            ["key", True, None],
            ["factor", False, 2.0],
            ["note", False, None],
        ]
        assert (await session.request("call", name="add", arguments={"b": 5}))["result"] == {
            "sum": 6
        }
        assert (await session.request("call", name="slow", arguments=None))["result"] == {
            "gate": "open"
        }
        builtin = await session.request("call", name="commands/list", arguments={})
        assert builtin["result"]["list"]["add"] == {"a": 1, "b": 2}


async def test_command_errors_have_their_status_and_the_server_keeps_serving() -> None:
    def broken() -> None:
        raise RuntimeError("the instrument is off")

    async with running_server() as server, connected(server) as session:
        server.register_command("broken", broken)
        server.register_command("add", lambda a, b: {"sum": a + b}, {"a": 1, "b": 2})
        cases = [
            ({"name": "nope", "arguments": {}}, "NOT_FOUND", KeyError, "nope"),
            ({"name": "add", "arguments": {"c": 1}}, "INVALID_ARGUMENT", TypeError, "'add'"),
            (
                {"name": "broken", "arguments": {}},
                "UNKNOWN",
                CommandFailedError,
                "instrument is off",
            ),
            ({"name": 5, "arguments": {}}, "INVALID_ARGUMENT", TypeError, "name"),
        ]
        for arguments, status, kind, text in cases:
            with pytest.raises(RemoteError) as failed:
                await session.request("call", **arguments)
            assert failed.value.status == status
            assert isinstance(failed.value.error, kind)
            assert text in str(failed.value.error)
        assert await session.request("ping") == {}


@pytest.mark.parametrize(
    ("op", "arguments", "status", "kind", "text"),
    [
        ("update", {"updates": {"k": {"n": {1: "x"}}}}, "INVALID_ARGUMENT", TypeError, "int"),
        ("update", {"updates": {1: "x"}}, "INVALID_ARGUMENT", TypeError, "keys must be str"),
        (
            "update",
            {"updates": {"ok": 1}, "removals": [["k"]]},
            "INVALID_ARGUMENT",
            TypeError,
            "str",
        ),
        ("update", {"updates": [1]}, "INVALID_ARGUMENT", TypeError, "'updates' must be a map"),
        ("leases", {"acquire": {"ok": 1, "k": -1}}, "INVALID_ARGUMENT", ValueError, ">= 0"),
        ("leases", {"acquire": {"k": math.nan}}, "INVALID_ARGUMENT", ValueError, "nan"),
        ("leases", {"acquire": {"k": "10"}}, "INVALID_ARGUMENT", ValueError, "str"),
        ("leases", {"acquire": {"k": True}}, "INVALID_ARGUMENT", ValueError, "bool"),
        ("subscribe", {"interval": -1}, "INVALID_ARGUMENT", ValueError, "interval"),
        ("subscribe", {"interval": math.nan}, "INVALID_ARGUMENT", ValueError, "interval"),
        ("subscribe", {"since": "3"}, "INVALID_ARGUMENT", TypeError, "since"),
        ("subscribe", {"since": 3, "epoch": 3}, "INVALID_ARGUMENT", TypeError, "epoch"),
        ("lock", {"key": "k", "timeout": -1}, "INVALID_ARGUMENT", ValueError, "timeout"),
        ("lock", {"key": 3}, "INVALID_ARGUMENT", TypeError, "keys must be str"),
        ("get", {"keys": "k"}, "INVALID_ARGUMENT", TypeError, "'keys' must be a list"),
        ("frobnicate", {}, "INVALID_ARGUMENT", ProtocolError, "unknown op"),
    ],
)
async def test_bad_input_gets_a_clear_error_and_changes_nothing(
    op: str, arguments: dict[str, object], status: str, kind: type[Exception], text: str
) -> None:
    async with running_server() as server, connected(server) as session:
        with pytest.raises(RemoteError) as failed:
            await session.request(op, **arguments)
        assert failed.value.status == status
        assert isinstance(failed.value.error, kind)
        assert text in str(failed.value.error)
        assert server.state.revision == 0 and not server.state.leases()
        assert await session.request("ping") == {}


async def test_a_request_without_an_id_gets_an_error_without_one() -> None:
    async with running_server() as server, connected(server) as session:
        await session.write_frame(encode_batch([{"op": "ping"}]))
        message = await asyncio.wait_for(session.unmatched.get(), 10)
        assert message["id"] is None and message["error"]["type"] == "ProtocolError"
        assert await session.request("ping") == {}


async def test_a_frame_over_the_limit_is_refused_whole() -> None:
    async with running_server(max_message_bytes=10_000) as server, connected(server) as session:
        ids = await session.send_many(
            [
                {"op": "update", "updates": {"small": 1}},
                {"op": "update", "updates": {"big": "x" * 20_000}},
            ]
        )
        for request_id in ids:
            with pytest.raises(RemoteError) as refused:
                await session.reply(request_id)
            assert refused.value.status == "RESOURCE_EXHAUSTED"
            assert isinstance(refused.value.error, MessageTooLargeError)
            assert "10000" in str(refused.value.error)
        assert server.state.revision == 0
        assert await session.request("ping") == {}


async def test_a_frame_far_over_the_limit_ends_the_stream() -> None:
    async with running_server(max_message_bytes=10_000) as server, connected(server) as session:
        await session.call.write(encode_batch([{"id": 1, "op": "ping", "pad": "x" * 3_000_000}]))
        assert await session.call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_outgoing_frames_stay_under_the_limit() -> None:
    limit = 10_000
    async with running_server(max_message_bytes=limit) as server, connected(server) as session:
        for index in range(6):
            server.update_state(None, DictionaryChange({f"k{index}": "v" * 3_000}))
        sub = await session.subscribe()
        first = await session.next_batch(sub)
        assert first["snapshot"] is True
        received = dict(first["updates"])
        while len(received) < 6:
            more = await session.next_batch(sub)
            assert more["snapshot"] is False and more["revision"] == first["revision"]
            received.update(more["updates"])
        assert received == server.copy_state()
        with pytest.raises(RemoteError) as too_big:
            await session.request("get", keys=None)
        assert too_big.value.status == "RESOURCE_EXHAUSTED"
        assert max(session.frames_seen) <= limit


async def test_a_malformed_frame_ends_only_that_session() -> None:
    async with running_server() as server, connected(server) as good, connected(server) as bad:
        await bad.call.write(b"\xc1 not msgpack")
        assert await bad.call.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed" in (await bad.call.details() or "")
        assert await good.request("ping") == {}


async def test_ending_the_request_stream_ends_the_session() -> None:
    async with running_server() as server, connected(server) as session:
        await session.request("leases", acquire={"k": None})
        await session.call.done_writing()
        assert await session.call.code() == grpc.StatusCode.OK
        await eventually(lambda: not server.state.leases() and not server.hub.sessions)


async def test_stopping_the_server_ends_sessions_cleanly() -> None:
    server_cm = running_server()
    server = await server_cm.__aenter__()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.stream_stream(SESSION_PATH)()
        await call.write(encode_batch([{"id": 1, "op": "hello", "token": None, "client": ""}]))
        await call.read()
        await server_cm.__aexit__(None, None, None)
        assert await call.code() == grpc.StatusCode.OK


async def test_updates_are_acknowledged_once_durable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, durability="disk")
    try:
        state = StateDictionary(store=store)
        async with running_server(state=state) as server, connected(server) as session:
            ids = await session.send_many(
                [{"op": "update", "updates": {"k": index}} for index in range(20)]
            )
            for request_id in ids:
                revision = (await session.reply(request_id))["revision"]
                assert server.state.is_durable(revision)
    finally:
        store.close()


async def test_an_update_is_acknowledged_only_when_the_store_says_it_is_durable() -> None:
    store = GatedStore()
    async with (
        running_server(state=StateDictionary(store=store)) as server,
        connected(server) as session,
    ):
        update = await session.send("update", updates={"k": 1})
        assert await session.request("ping") == {}  # answered; the update still waits
        assert not session._future(update).done()
        assert server.state.get("k") is None  # readers see a change once it is durable
        store.make_durable(1)
        assert await session.reply(update) == {"revision": 1}
        assert server.state.get("k") == 1


async def test_cancel_stops_a_waiting_lock_and_answers_it_cancelled() -> None:
    async with running_server() as server, connected(server) as a, connected(server) as b:
        await a.request("lock", key="L", exclusive=False, timeout=None, owner="r")
        waiting = await b.send("lock", key="L", exclusive=True, timeout=None, owner="w")
        # b's requests are handled in order: its lock is queued before this test.
        assert (await b.request("test_lock", key="L", exclusive=False))["free"] is False
        assert await b.request("cancel", request=waiting) == {"cancelled": True}
        with pytest.raises(RemoteError) as cancelled:
            await b.reply(waiting)
        assert cancelled.value.status == "CANCELLED"
        assert isinstance(cancelled.value.error, RequestCancelledError)
        # The writer left the queue: new readers are not held off any more.
        assert (await a.request("test_lock", key="L", exclusive=False))["free"] is True
        assert await b.request("cancel", request=waiting) == {"cancelled": False}
        with pytest.raises(RemoteError) as bad:
            await b.request("cancel", request="first")
        assert bad.value.status == "INVALID_ARGUMENT"
