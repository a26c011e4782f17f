"""NanoVer's WebSocket protocol at ``/`` of the web port, checked against the reference
(/work/shared/reference/nanover-websocket.md, §2-§10) with a bare msgpack WebSocket client
that does what NanoVer's clients do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgpack
import pytest

from statehub import (
    AsyncClient,
    DictionaryChange,
    StateDictionary,
    StateServer,
    StoreUnavailableError,
)
from statehub.server.limits import SessionLimits
from statehub.store.memory import MemoryStore
from support.polling import DEADLINE, eventually
from support.raw_session import running_server


class NanoverPeer:
    """A NanoVer client: applies state messages to its copy, keeps the rest by kind."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.state: dict[str, Any] = {}
        self.state_messages: list[dict[str, Any]] = []
        self.commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.others: list[dict[str, Any]] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type is not aiohttp.WSMsgType.BINARY:
                continue
            decoded = msgpack.unpackb(message.data)
            assert len(decoded) == 1, f"a server message carries exactly one key: {decoded}"
            if "state" in decoded:
                state = decoded["state"]
                assert set(state) == {"updates", "removals"}, state
                self.state_messages.append(state)
                self.state.update(state["updates"])
                for key in state["removals"]:
                    self.state.pop(key, None)
            elif "command" in decoded:
                self.commands.put_nowait(decoded["command"])
            elif "error" in decoded:
                self.errors.put_nowait(decoded["error"])
            else:
                self.others.append(decoded)

    async def send(self, message: Any) -> None:
        await self.socket.send_bytes(msgpack.packb(message))

    async def write(self, updates: dict[str, Any], removals: list[str] | None = None) -> None:
        await self.send({"state": {"updates": updates, "removals": removals or []}})

    async def request(self, name: str, arguments: dict[str, Any], request_id: int) -> None:
        await self.send(
            {"command": {"request": {"name": name, "arguments": arguments, "id": request_id}}}
        )

    async def next_command(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.commands.get(), DEADLINE)

    async def next_error(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.errors.get(), DEADLINE)

    async def close(self) -> None:
        await self.socket.close()
        await asyncio.gather(self._reader, return_exceptions=True)


@asynccontextmanager
async def nanover_peer(server: StateServer) -> AsyncIterator[NanoverPeer]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{server.http_port}", max_msg_size=0) as socket,
    ):
        peer = NanoverPeer(socket)
        try:
            yield peer
        finally:
            await peer.close()


@asynccontextmanager
async def web_server(**options: Any) -> AsyncIterator[StateServer]:
    async with running_server(http_port=0, **options) as server:
        yield server


async def test_connect_gets_the_whole_state_then_deltas_with_both_fields() -> None:
    async with web_server() as server:
        server.update_state(None, DictionaryChange({"a": 1, "b": {"nested": [1, 2.5, None]}}))
        async with nanover_peer(server) as peer:
            await eventually(lambda: len(peer.state_messages) >= 1)
            assert peer.state_messages[0] == {
                "updates": {"a": 1, "b": {"nested": [1, 2.5, None]}},
                "removals": [],
            }
            server.update_state(None, DictionaryChange(removals=["a"]))
            await eventually(lambda: len(peer.state_messages) >= 2)
            assert peer.state_messages[1] == {"updates": {}, "removals": ["a"]}


async def test_an_empty_state_sends_nothing_until_the_first_change() -> None:
    async with web_server() as server, nanover_peer(server) as peer:
        server.update_state(None, DictionaryChange({"first": True}))
        await eventually(lambda: peer.state == {"first": True})
        assert peer.state_messages[0] == {"updates": {"first": True}, "removals": []}


async def test_writes_reach_everyone_including_the_writer_without_acknowledgement() -> None:
    async with web_server() as server, nanover_peer(server) as a, nanover_peer(server) as b:
        await a.write({"update.index.u-A": 0, "shared": [1, "x"]})
        await eventually(lambda: a.state.get("shared") == [1, "x"])
        await eventually(lambda: b.state == a.state)
        assert server.copy_state() == {"update.index.u-A": 0, "shared": [1, "x"]}
        assert a.commands.empty() and a.errors.empty()


async def test_a_key_both_updated_and_removed_in_one_message_ends_up_removed() -> None:
    async with web_server() as server, nanover_peer(server) as peer:
        server.update_state(None, DictionaryChange({"k": 0, "other": 0}))
        await eventually(lambda: "k" in peer.state)
        await peer.write({"k": 1, "other": 1}, removals=["k"])
        await eventually(lambda: peer.state == {"other": 1})
        assert all(not (set(m["updates"]) & set(m["removals"])) for m in peer.state_messages), (
            "a delta must not list a key in both fields"
        )


async def test_fast_writes_are_coalesced_into_fewer_deltas_with_the_last_value() -> None:
    async with web_server() as server, nanover_peer(server) as writer, nanover_peer(server) as b:
        for index in range(100):
            await writer.write({"counter": index})
        await eventually(lambda: b.state.get("counter") == 99)
        assert server.state.revision == 100
        assert len(b.state_messages) < 100


async def test_leases_apply_to_nanover_writes_and_the_writer_is_told() -> None:
    async with web_server() as server, nanover_peer(server) as peer:
        owner = AsyncClient("127.0.0.1", server.port)
        try:
            await owner.set("held", "owner's")
            assert await owner.attempt_update_locks({"held": 60})
            await eventually(lambda: peer.state.get("held") == "owner's")
            await peer.write({"held": "mine", "free": 1})
            error = await peer.next_error()
            assert error["type"] == "ResourceLockedError" and "held" in error["message"]
            assert server.copy_state() == {"held": "owner's"}  # nothing half-applied
            await eventually(lambda: peer.state_messages[-1]["updates"] == {"held": "owner's"})
        finally:
            await owner.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"n": {1: "x"}}, "dict keys must be str"),
        (b"x" * (3 * 1024 * 1024 + 1), "over the limit"),
        ("x" * (3 * 1024 * 1024 + 1), "over the limit"),
    ],
)
async def test_a_value_statehub_cannot_carry_is_refused_and_the_writer_converges(
    value: object, expected: str
) -> None:
    async with web_server() as server, nanover_peer(server) as peer:
        await peer.write({"k": 1})
        await eventually(lambda: peer.state == {"k": 1})
        sent = len(peer.state_messages)
        await peer.write({"k": value, "new": 2}, removals=["gone"])
        error = await peer.next_error()
        assert expected in error["message"] and "'k'" in error["message"]
        # Its copy is told the current values of what it wrote: nothing half-applied.
        await eventually(lambda: len(peer.state_messages) > sent)
        assert peer.state_messages[sent] == {"updates": {"k": 1}, "removals": ["gone", "new"]}
        assert server.copy_state() == {"k": 1}


async def test_commands_answer_with_the_request_echoed_and_a_response_or_exception() -> None:
    async with web_server() as server, nanover_peer(server) as peer:
        server.register_command("echo", lambda **kw: {"got": kw}, {"default": 1})
        await peer.request("echo", {"x": [1, 2]}, 7)
        reply = await peer.next_command()
        assert reply == {
            "request": {"name": "echo", "arguments": {"x": [1, 2]}, "id": 7},
            "response": {"got": {"default": 1, "x": [1, 2]}},
        }
        await peer.request("no/such", {}, 8)
        reply = await peer.next_command()
        assert reply["request"]["id"] == 8 and "no/such" in reply["exception"]
        await peer.request("commands/list", {}, 9)
        listed = (await peer.next_command())["response"]["list"]
        assert listed["echo"] == {"default": 1}


async def test_a_client_registered_command_is_forwarded_to_its_client() -> None:
    async with web_server() as server, nanover_peer(server) as a, nanover_peer(server) as b:
        await a.send(
            {
                "command": {
                    "register": {
                        "name": "demo/greet",
                        "arguments": {"who": "world"},
                        "label": "Greet",
                        "icon": None,
                    }
                }
            }
        )
        await eventually(lambda: "demo/greet" in server.commands)
        await b.request("demo/greet", {"who": "B"}, 2)
        forwarded = await a.next_command()
        request = forwarded["request"]
        assert request["name"] == "demo/greet" and request["arguments"] == {"who": "B"}
        await a.send({"command": {"request": request, "response": {"text": "hi B"}}})
        reply = await b.next_command()
        assert reply == {
            "request": {"name": "demo/greet", "arguments": {"who": "B"}, "id": 2},
            "response": {"text": "hi B"},
        }
        await b.request("commands/list", {}, 9)
        listing = (await b.next_command())["response"]
        assert listing["list"]["demo/greet"] == {"who": "world"}
        assert {"name": "demo/greet", "arguments": {"who": "world"}, "label": "Greet"} in listing[
            "commands"
        ]
        await b.request("demo/greet", {}, 3)
        forwarded = await a.next_command()
        assert forwarded["request"]["arguments"] == {"who": "world"}  # defaults merged
        await a.send({"command": {"request": forwarded["request"], "exception": "no greeting"}})
        assert (await b.next_command())["exception"] == "no greeting"


async def test_statehub_clients_can_run_a_nanover_registered_command() -> None:
    async with web_server() as server, nanover_peer(server) as a:
        await a.send({"command": {"register": {"name": "demo/add", "arguments": None}}})
        await eventually(lambda: "demo/add" in server.commands)
        client = AsyncClient("127.0.0.1", server.port)
        try:
            call = asyncio.ensure_future(client.run_command("demo/add", x=1, y=2))
            request = (await a.next_command())["request"]
            await a.send({"command": {"request": request, "response": 3}})
            assert await asyncio.wait_for(call, DEADLINE) == {"result": 3}
        finally:
            await client.close()


async def test_a_forwarded_command_that_is_never_answered_times_out_with_an_exception() -> None:
    async with web_server() as server, nanover_peer(server) as a, nanover_peer(server) as b:
        assert server.web is not None
        server.web.nanover.forward_timeout = 0.2
        await a.send({"command": {"register": {"name": "silent", "arguments": {}}}})
        await eventually(lambda: "silent" in server.commands)
        await b.request("silent", {}, 1)
        await a.next_command()  # a gets it, and never answers
        reply = await b.next_command()
        assert reply["request"]["id"] == 1 and "did not answer within 0.2 s" in reply["exception"]


async def test_a_registration_ends_with_its_client_and_pending_calls_fail() -> None:
    async with web_server() as server, nanover_peer(server) as b:
        async with nanover_peer(server) as a:
            await a.send({"command": {"register": {"name": "leaving", "arguments": {}}}})
            await eventually(lambda: "leaving" in server.commands)
            await b.request("leaving", {}, 1)
            await a.next_command()
        reply = await b.next_command()
        assert "disconnected" in reply["exception"]
        assert "leaving" not in server.commands
        await b.request("leaving", {}, 2)
        assert "no command named 'leaving'" in (await b.next_command())["exception"]


async def test_a_client_cannot_take_over_a_server_command() -> None:
    async with web_server() as server, nanover_peer(server) as a:
        await a.send({"command": {"register": {"name": "commands/list", "arguments": {}}}})
        error = await a.next_error()
        assert "commands/list" in error["message"] and "server" in error["message"]


async def test_disconnect_removes_the_users_keys_in_one_delta() -> None:
    async with web_server() as server, nanover_peer(server) as b:
        async with nanover_peer(server) as a:
            await a.write(
                {
                    "avatar.u-A": {"playerid": "u-A", "name": "Ana"},
                    "update.index.u-A": 3,
                    "selection.u-A.1": {"ids": [1]},
                    "interaction.g-17": {"position": [0, 0, 0], "owner.id": "u-A"},
                    "interaction.g-18": {"position": [0, 0, 0], "owner.id": "someone"},
                    "note.u-AB": "another user's key, not ours",
                }
            )
            await eventually(lambda: len(b.state) == 6)
        await eventually(lambda: set(b.state) == {"interaction.g-18", "note.u-AB"})
        last = b.state_messages[-1]
        assert last["updates"] == {}
        assert sorted(last["removals"]) == sorted(
            ["avatar.u-A", "update.index.u-A", "selection.u-A.1", "interaction.g-17"]
        )


@pytest.mark.parametrize("user", [".", "0.", "a.b", ""])
async def test_disconnect_cleans_up_user_ids_with_dots(user: str) -> None:
    async with web_server() as server, nanover_peer(server) as b:
        async with nanover_peer(server) as a:
            await a.write(
                {
                    f"avatar.{user}": {"name": "dotted"},
                    f"update.index.{user}": 1,
                    f"selection.{user}.1": [1],
                    "other.zz": "not theirs",
                }
            )
            await eventually(lambda: len(b.state) == 4)
        await eventually(lambda: set(b.state) == {"other.zz"})


async def test_a_nanover_client_connects_on_any_path() -> None:
    async with (
        web_server() as server,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{server.http_port}/any/path?x=1") as socket,
    ):
        peer = NanoverPeer(socket)
        try:
            await peer.write({"via.path": True})
            await eventually(lambda: peer.state == {"via.path": True})
        finally:
            await peer.close()
        missing = await http.get(f"http://127.0.0.1:{server.http_port}/any/path")
        assert missing.status == 404  # only a WebSocket upgrade is NanoVer's
        health = await http.get(f"http://127.0.0.1:{server.http_port}/healthz")
        assert health.status == 200


async def test_a_client_without_an_avatar_leaves_its_keys() -> None:
    async with web_server() as server:
        async with nanover_peer(server) as a:
            await a.write({"plain.key": 1})
            await eventually(lambda: "plain.key" in server.copy_state())
        await eventually(lambda: not server.web.nanover.connections)  # type: ignore[union-attr]
        assert server.copy_state() == {"plain.key": 1}


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("text", "binary"),
        (b"\xc1 not msgpack", "msgpack"),
        (msgpack.packb([1, 2]), "map"),
        (msgpack.packb({"state": {"updates": {"k": {1: "int key"}}}}), "k"),
        (msgpack.packb({"state": {"updates": [1]}}), "updates"),
        (msgpack.packb({"command": {"request": {"id": 1}, "response": 1}}), "not waiting"),
        (msgpack.packb({"command": {"register": {"name": 5}}}), "name"),
    ],
)
async def test_bad_input_is_answered_and_reading_goes_on(bad: Any, expected: str) -> None:
    async with web_server() as server, nanover_peer(server) as peer:
        if isinstance(bad, str):
            await peer.socket.send_str(bad)
        else:
            await peer.socket.send_bytes(bad)
        error = await peer.next_error()
        assert expected in error["message"]
        assert server.state.revision == 0
        await peer.write({"still": "reading"})
        await eventually(lambda: peer.state == {"still": "reading"})


async def test_permessage_deflate_is_declined_and_the_client_works_without_it() -> None:
    # Compressing each shared delta for each client would undo the one encoding per tick.
    async with (
        web_server() as server,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{server.http_port}", compress=15) as socket,
    ):
        assert socket.compress == 0  # offered, not negotiated
        peer = NanoverPeer(socket)
        try:
            await peer.write({"avatar.u1": {"position": [0, 1.6, 0]}})
            await eventually(lambda: peer.state == {"avatar.u1": {"position": [0, 1.6, 0]}})
        finally:
            await peer.close()


async def _fill_until_it_falls_behind(server: StateServer, in_step: int) -> int:
    """Write big values until the NanoVer connection nobody reads leaves the broadcast
    (its buffers are full, so the server stops writing to it); the last index written."""
    assert server.web is not None
    room = server.web.nanover
    big = "x" * 2_000_000
    index = 0
    while len(room.in_step) == in_step:
        server.update_state(None, DictionaryChange({f"big{index % 5}": f"{index}{big}"}))
        index += 1
        await asyncio.sleep(0.04)
        assert index < 500, "the slow reader never fell behind"
    server.update_state(None, DictionaryChange({"last": index}, removals=["big0"]))
    return index


async def test_a_slow_reader_falls_behind_alone_and_still_converges() -> None:
    async with (
        web_server() as server,
        nanover_peer(server) as fast,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{server.http_port}", max_msg_size=0) as slow,
    ):
        assert server.web is not None
        room = server.web.nanover
        await eventually(lambda: len(room.connections) == 2)
        index = await _fill_until_it_falls_behind(server, in_step=2)
        await eventually(lambda: fast.state.get("last") == index)
        assert fast.state == server.copy_state()
        slow_peer = NanoverPeer(slow)
        try:
            await eventually(lambda: slow_peer.state.get("last") == index)
            assert slow_peer.state == server.copy_state()
        finally:
            await slow_peer.close()
        await eventually(lambda: len(room.connections) == 1)
        assert room.in_step == room.connections  # the fast one never left the broadcast


@pytest.mark.parametrize("others", [0, 1], ids=["alone", "with-a-fast-reader"])
async def test_a_reader_that_caught_up_rejoins_the_shared_broadcast(others: int) -> None:
    # Alone, it stopped the broadcast when it fell behind: rejoining starts it again from
    # where the reader's copy is, so the changes made meanwhile are not lost.
    async with (
        web_server() as server,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{server.http_port}", max_msg_size=0) as slow,
    ):
        assert server.web is not None
        room = server.web.nanover
        fast = [await http.ws_connect(f"ws://127.0.0.1:{server.http_port}") for _ in range(others)]
        fast_peers = [NanoverPeer(socket) for socket in fast]
        try:
            await eventually(lambda: len(room.in_step) == 1 + others)
            index = await _fill_until_it_falls_behind(server, in_step=1 + others)
            slow_peer = NanoverPeer(slow)
            try:
                await eventually(lambda: len(room.in_step) == 1 + others)
                assert room.in_step == room.connections
                for step in range(3):  # changes after the rejoin reach everyone
                    server.update_state(None, DictionaryChange({"after": step}, ["big1"]))
                    await asyncio.sleep(0.05)
                for peer in [slow_peer, *fast_peers]:
                    await eventually(lambda peer=peer: peer.state.get("after") == 2)
                    assert peer.state == server.copy_state()
                    assert peer.state["last"] == index
            finally:
                await slow_peer.close()
        finally:
            for peer in fast_peers:
                await peer.close()


async def test_commands_in_the_list_form_that_nanovers_python_client_sends() -> None:
    async with web_server() as server, nanover_peer(server) as a, nanover_peer(server) as b:
        server.register_command("echo", lambda **kw: kw)
        await a.send({"command": [{"register": {"name": "listed", "arguments": {}}}]})
        await eventually(lambda: "listed" in server.commands)
        await b.send(
            {
                "command": [
                    {"request": {"name": "echo", "arguments": {"x": 1}, "id": 1}},
                    {"request": {"name": "listed", "arguments": {}, "id": 2}},
                ]
            }
        )
        assert (await b.next_command())["response"] == {"x": 1}
        forwarded = (await a.next_command())["request"]
        await a.send({"command": [{"request": forwarded, "response": None}]})
        reply = await b.next_command()
        assert reply == {"request": {"name": "listed", "arguments": {}, "id": 2}, "response": None}


async def test_the_nanover_message_limit_is_set_per_edge() -> None:
    async with web_server(nanover_max_message_bytes=64 * 1024) as server:
        assert server.web is not None and server.web.nanover_max_message_bytes == 64 * 1024
        async with nanover_peer(server) as peer:
            await peer.write({"small": "x" * 1000})
            await eventually(lambda: "small" in peer.state)
            await peer.write({"big": "x" * 100_000})  # over this edge's limit: closed, 1009
            await eventually(lambda: peer.socket.closed)
            assert peer.socket.close_code == 1009
    async with web_server() as server:
        assert server.web is not None
        assert server.web.nanover_max_message_bytes == 128 * 1024 * 1024  # NanoVer's own


class _UnavailableStore(MemoryStore):
    """A memory store that cannot commit (as a Redis store whose server is gone)."""

    def commit(self, *args: Any, **kwargs: Any) -> int:
        raise StoreUnavailableError("the store is unreachable (test)")


async def test_a_store_error_is_answered_and_the_client_goes_on() -> None:
    state = StateDictionary(store=_UnavailableStore())
    async with web_server(state=state) as server, nanover_peer(server) as peer:
        await peer.write({"a": 1})
        error = await peer.next_error()
        assert error["type"] == "StoreUnavailableError"
        assert "unreachable" in error["message"]
        await peer.request("commands/list", {}, 1)  # the connection still serves it
        assert "response" in await peer.next_command()


async def test_registrations_are_bounded_by_the_session_limit() -> None:
    async with (
        web_server(limits=SessionLimits(max_registrations=2)) as server,
        nanover_peer(server) as peer,
    ):
        for name in ("one", "two", "three"):
            await peer.send({"command": {"register": {"name": name, "arguments": {}}}})
        error = await peer.next_error()
        assert error["type"] == "LimitExceededError"
        assert "register 'three'" in error["message"]
        assert "max_registrations=2" in error["message"]
        assert {"one", "two"} <= set(server.commands) and "three" not in server.commands


async def test_a_message_with_too_many_command_payloads_is_refused_whole() -> None:
    """Counted from the msgpack headers, before the message is decoded: nothing of it is
    run or applied, its state change neither; a message within the bound is served."""
    async with (
        web_server(limits=SessionLimits(max_pending_requests=3)) as server,
        nanover_peer(server) as peer,
    ):
        server.register_command("echo", lambda **kw: kw)
        request = {"request": {"name": "echo", "arguments": {}, "id": 1}}
        await peer.send({"state": {"updates": {"refused": 1}}, "command": [request] * 4})
        error = await peer.next_error()
        assert error["type"] == "LimitExceededError"
        assert "4 command payloads" in error["message"] and "refused whole" in error["message"]
        await peer.send({"state": {"updates": {"served": 1}}, "command": [request] * 3})
        for _ in range(3):
            assert (await peer.next_command())["response"] == {}
        await eventually(lambda: server.state.get("served") == 1)
        assert server.state.get("refused") is None
        # One payload, not in a list, in a message longer than the bound: counted as one.
        await peer.send({"command": {"request": {"name": "echo", "arguments": {"x": 1}, "id": 2}}})
        assert (await peer.next_command())["response"] == {"x": 1}
