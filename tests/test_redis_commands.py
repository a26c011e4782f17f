"""Commands and endpoints across ``statehub serve --store redis://...`` servers.

Real processes over one real redis-server: a server with commands of its own
(``fixtures/command_server.py``), plain ``statehub serve --store`` servers, and servers
serving endpoints from ``--config``; clients connect to one server and use what another
one holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from statehub.auth.permissions import AdminRight, Grant, Permissions, Principal
from statehub.bench.fleet import RedisProcess, start_redis, start_serve_ports, stop
from statehub.client import AsyncClient, ConnectionLostError
from statehub.endpoints.return_codes import AccessDeniedError, InvalidRoutingKeyError
from statehub.errors import (
    CommandFailedError,
    CommandUnavailableError,
    PermissionDeniedError,
    ResourceLockedError,
)
from statehub.server.shared_commands import _principal_from_wire, _principal_to_wire
from support.auth import TOKENS, identities
from support.polling import eventually
from support.raw_session import RawSession, RemoteError
from support.redis_servers import FAST_LIVENESS

FIXTURES = Path(__file__).parent / "fixtures"
#: docs/redis.md: a call to a server killed meanwhile ends within liveness TTL + one
#: heartbeat of the caller's server (5 + 1 s by default).
GONE_BOUND_S = 6.0
#: docs/redis.md: a dead server's commands leave the listing as its leases are released.
SWEEP_BOUND_S = 10.0
DEADLINE_S = 30.0

OTHER_NODE = """
name: othernode
endpoints:
  - name: temperature
    module: kv_store_key
    initial_value: 21.5
"""


class Fleet:
    """A redis-server and statehub processes over it, all stopped by ``close``."""

    def __init__(self, redis_process: RedisProcess) -> None:
        self.redis = redis_process
        self.processes: list[subprocess.Popen[str]] = []
        #: Each server's gRPC port by its plain-TCP one (what ``serve`` returns).
        self.grpc_ports: dict[int, int] = {}

    def serve(self, *extra: str) -> int:
        process, ports = start_serve_ports("--store", self.redis.url, *extra)
        self.processes.append(process)
        self.grpc_ports[ports.tcp] = ports.grpc
        return ports.tcp

    def command_server(self, prefix: str) -> tuple[subprocess.Popen[str], int]:
        """``fixtures/command_server.py``: commands ``<prefix>.echo``, ``.refuse``..."""
        process = subprocess.Popen(
            [sys.executable, str(FIXTURES / "command_server.py"), self.redis.url, prefix],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("port "), f"the command server did not start: {line!r}"
        return process, int(line.split()[1])

    def close(self) -> None:
        for process in self.processes:
            stop(process)
        stop(self.redis.process)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(start_redis(tmp_path_factory.mktemp("redis")))
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="module")
def ports(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """A (commands ``a.*``), B (nothing of its own), E1 and E2 (endpoints)."""
    other = tmp_path_factory.mktemp("config") / "othernode.yaml"
    other.write_text(OTHER_NODE)
    _, a_port = fleet.command_server("a")
    return {
        "a": a_port,
        "b": fleet.serve(),
        "e1": fleet.serve("--config", str(FIXTURES / "endpoints_providers.yaml")),
        "e2": fleet.serve("--config", str(other)),
    }


@asynccontextmanager
async def client(port: int, credential: str | None = None) -> AsyncIterator[AsyncClient]:
    opened = AsyncClient("127.0.0.1", port, reconnect=False, credential=credential)
    await opened.connect()
    try:
        yield opened
    finally:
        await opened.close()


@asynccontextmanager
async def two_servers(tmp_path: Path) -> AsyncIterator[tuple[RedisProcess, Any, Any]]:
    """A Redis and two in-process ``StateServer``s over it (A, B), all stopped after."""
    from statehub import StateServer
    from statehub.store.redis import RedisStore
    from statehub.store.state_dictionary import StateDictionary

    redis_process = start_redis(tmp_path / "redis")
    stores = [RedisStore(redis_process.url, **FAST_LIVENESS) for _ in range(2)]
    a, b = (StateServer(state=StateDictionary(store=store), port=0) for store in stores)
    try:
        async with a, b:
            yield redis_process, a, b
    finally:
        for store in stores:
            store.close()
        stop(redis_process.process)


async def test_a_command_of_server_a_runs_for_a_client_of_b(ports: dict[str, int]) -> None:
    async with client(ports["b"]) as b:
        assert await b.run_command("a.echo", x=1, big=2**70, nested={"l": [1.5, None]}) == {
            "echoed": {"default": 7, "x": 1, "big": 2**70, "nested": {"l": [1.5, None]}}
        }
        large = "x" * 200_000  # an answer too large to come with the message: read from Redis
        assert await b.run_command("a.echo", large=large) == {
            "echoed": {"default": 7, "large": large}
        }
        with pytest.raises(ResourceLockedError, match="refused on purpose") as refused:
            await b.run_command("a.refuse", keys=["k1", "k2"])
        assert refused.value.keys == {"k1", "k2"}  # typed, details included
        with pytest.raises(CommandFailedError, match=r"'a.crash' failed: crashed on purpose"):
            await b.run_command("a.crash")
        with pytest.raises(TypeError, match=r"a.refuse"):  # checked on A, as locally
            await b.run_command("a.refuse", wrong=1)
        with pytest.raises(KeyError, match=r"no command named 'nowhere.at.all'"):
            await b.run_command("nowhere.at.all")


async def test_the_listing_on_b_has_every_servers_commands(ports: dict[str, int]) -> None:
    async with client(ports["b"]) as b:
        listing = await b.available_commands()
        assert listing["a.echo"] == {"default": 7}
        assert {"a.refuse", "a.crash", "a.slow", "commands/list", "endpoint.get"} <= set(listing)
        listed = await b.run_command("commands/list")  # NanoVer's built-in lists them too
        assert listed is not None and "a.echo" in listed["list"]  # type: ignore[operator]


async def test_a_forwarded_call_runs_as_the_callers_identity(ports: dict[str, int]) -> None:
    async with client(ports["b"]) as b:
        # No --auth on B: its clients may do everything, admin rights included, on A too.
        assert await b.run_command("a.whoami") == {
            "name": "anyone",
            "admin": sorted(right.value for right in AdminRight),
        }
    principal = Principal(
        "reader",
        Permissions.of([Grant(read=("lab/",), call=("a.*",), admin=frozenset({"sessions"}))]),  # type: ignore[arg-type]
        ("viewer",),
        "token",
    )
    assert _principal_from_wire(_principal_to_wire(principal)) == principal


async def test_rights_are_checked_where_the_client_is_and_go_with_the_call(
    fleet: Fleet, ports: dict[str, int], tmp_path: Path
) -> None:
    (tmp_path / "identities.yaml").write_text(identities())
    guarded = fleet.serve("--auth", str(tmp_path / "identities.yaml"))
    async with (
        client(guarded, TOKENS["walt"]) as walt,
        client(guarded, TOKENS["ada"]) as ada,
        client(ports["b"]) as anyone,
    ):
        # walt may call echo* and endpoint.* only: refused on his server, never sent to A.
        with pytest.raises(PermissionDeniedError, match=r"call right on command 'a\.echo'"):
            await walt.run_command("a.echo")
        whoami = await ada.run_command("a.whoami")  # A sees the identity of the caller
        assert whoami == {"name": "ada", "admin": sorted(right.value for right in AdminRight)}
        await anyone.endpoint_lock("somenode.valves.v1")
        with pytest.raises(PermissionDeniedError, match="admin right 'force_unlock'"):
            await walt.endpoint_unlock("somenode.valves.v1", force=True)  # checked on E1
        assert (await ada.endpoint_unlock("somenode.valves.v1", force=True))["unlocked"]


async def test_cancelling_a_forwarded_call_cancels_it_where_it_runs(
    fleet: Fleet, ports: dict[str, int]
) -> None:
    grpc_port = fleet.grpc_ports[ports["b"]]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        session = RawSession(channel)
        await session.hello()
        call = await session.send(
            "call", name="a.slow", arguments={"seconds": 3600.0, "mark": "t/cancelled"}
        )
        async with client(ports["b"]) as b:
            await _until_value(b, "t/cancelled", "running")
        assert await session.request("cancel", request=call) == {"cancelled": True}
        with pytest.raises(RemoteError, match="cancelled"):
            await session.reply(call)
        await session.close()
    async with client(ports["b"]) as b:
        await _until_value(b, "t/cancelled", "cancelled")  # A's slow saw its cancel


async def test_a_name_offered_by_a_live_server_is_refused_elsewhere(fleet: Fleet) -> None:
    from statehub import StateServer
    from statehub.store.redis import RedisStore
    from statehub.store.state_dictionary import StateDictionary

    store = RedisStore(fleet.redis.url)
    server = StateServer(state=StateDictionary(store=store), port=0)
    try:
        async with server:
            with pytest.raises(
                ValueError, match=r"'a.echo' is already offered by server \w+ \(host .+, pid \d+\)"
            ):
                server.register_command("a.echo", lambda: None)
            assert "a.echo" not in server.commands  # nothing half-registered
            server.register_command("here.only", lambda: {"here": True})
            server.unregister_command("here.only")
    finally:
        store.close()


async def test_endpoints_of_another_server_read_set_and_lockout(ports: dict[str, int]) -> None:
    async with client(ports["b"]) as b, client(ports["e2"]) as e2:
        assert await b.endpoint_get("somenode.kv.foo") == {"value_raw": 1, "value_cal": 3}
        await b.endpoint_set("somenode.kv.foo", 4)
        assert await e2.endpoint_get("somenode.kv.foo") == {"value_raw": 4, "value_cal": 12}
        assert await b.get("somenode.kv.foo") == 4  # the key itself, shared as any other
        key = await b.endpoint_lock("somenode.kv", tag="calibrating")
        locked = await e2.endpoint_get("somenode.kv.foo.is-locked")  # a specifier routes too
        assert locked == {"is_locked": True, "tag": "calibrating"}
        with pytest.raises(AccessDeniedError) as denied:  # typed, with its dripline code
            await e2.endpoint_set("somenode.kv.foo", 5)
        assert denied.value.code == 307
        await e2.endpoint_set("somenode.kv.foo", 5, lockout_key=key)
        assert (await b.endpoint_unlock("somenode.kv", key))["unlocked"] is True
        await b.endpoint_set("somenode.kv.foo", 1)
        assert await e2.endpoint_get("othernode.temperature") == {  # e2's own, still local
            "value_raw": 21.5,
            "value_cal": 21.5,
        }
        assert await b.endpoint_cmd("somenode.valves.v1", "ping") == {}
        with pytest.raises(InvalidRoutingKeyError) as unknown:
            await b.endpoint_get("nowhere.kv.foo")
        assert unknown.value.code == 102


async def test_the_endpoint_listing_joins_every_servers_endpoints(ports: dict[str, int]) -> None:
    async with client(ports["b"]) as b, client(ports["e1"]) as e1:
        everywhere = await b.list_endpoints()
        assert set(everywhere) == {
            "somenode.kv.foo",
            "somenode.kv.bar",
            "somenode.kv.baz",
            "somenode.valves.v1",
            "othernode.temperature",
        }
        assert sorted(await e1.list_endpoints()) == sorted(everywhere)
        assert await b.list_endpoints("othernode") == ["othernode.temperature"]
        assert await b.list_endpoints("somenode.valves") == ["somenode.valves.v1"]


async def test_kill_9_of_the_server_running_a_call_ends_it_with_a_clear_error(
    tmp_path: Path,
) -> None:
    fleet = Fleet(start_redis(tmp_path / "redis"))
    try:
        doomed, _ = fleet.command_server("k")
        fleet.serve("--config", str(FIXTURES / "endpoints_providers.yaml"))
        doomed_endpoints = fleet.processes[-1]
        b_port = fleet.serve()
        async with client(b_port) as b:
            assert await b.run_command("k.echo") == {"echoed": {"default": 7}}
            assert await b.endpoint_get("somenode.kv.baz") == {
                "value_raw": [1, 2],
                "value_cal": [1, 2],
            }
            running = asyncio.create_task(b.run_command("k.slow", seconds=3600.0, mark="k/s"))
            await _until_value(b, "k/s", "running")
            os.kill(doomed.pid, signal.SIGKILL)
            os.kill(doomed_endpoints.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            with pytest.raises(
                CommandUnavailableError,
                match=r"'k.slow' is served by server \w+ \(host .+, pid \d+\), which is gone "
                r"\(it went away before answering\)",
            ):
                await asyncio.wait_for(running, DEADLINE_S)
            assert time.monotonic() - killed_at < GONE_BOUND_S
            started = time.monotonic()
            with pytest.raises((CommandUnavailableError, KeyError), match=r"k.echo"):
                await asyncio.wait_for(b.run_command("k.echo"), DEADLINE_S)
            with pytest.raises((CommandUnavailableError, KeyError), match=r"endpoint.get"):
                await asyncio.wait_for(b.endpoint_get("somenode.kv.baz"), DEADLINE_S)
            assert time.monotonic() - started < GONE_BOUND_S
            # Once their liveness keys expire, the dead servers' commands leave the listing.

            async def unlisted() -> bool:
                return not {"k.echo", "endpoint.get"} & set(await b.available_commands())

            await eventually(
                unlisted,
                "the dead servers' commands gone from the listing",
                timeout=SWEEP_BOUND_S - (time.monotonic() - killed_at),
            )
    finally:
        fleet.close()


async def test_a_server_stopped_cleanly_takes_its_commands_away(tmp_path: Path) -> None:
    fleet = Fleet(start_redis(tmp_path / "redis"))
    try:
        leaving, _ = fleet.command_server("s")
        b_port = fleet.serve()
        async with client(b_port) as b:
            assert "s.echo" in await b.available_commands()
            leaving.terminate()
            await asyncio.to_thread(leaving.wait, DEADLINE_S)

            async def unlisted() -> bool:
                return "s.echo" not in await b.available_commands()

            await eventually(unlisted, "s.echo no longer listed", timeout=DEADLINE_S)
            with pytest.raises(KeyError, match=r"no command named 's.echo'"):
                await b.run_command("s.echo")
    finally:
        fleet.close()


def test_a_server_alone_keeps_a_registry_of_its_own(tmp_path: Path) -> None:
    from statehub import StateServer
    from statehub.core.commands import CommandRegistry
    from statehub.store.sqlite import SQLiteStore
    from statehub.store.state_dictionary import StateDictionary

    assert type(StateServer(port=0).hub.commands) is CommandRegistry  # memory
    store = SQLiteStore(tmp_path / "data")
    try:
        server = StateServer(state=StateDictionary(store=store), port=0)
        assert type(server.hub.commands) is CommandRegistry
    finally:
        store.close()


async def test_commands_are_offered_again_when_redis_lost_its_data(tmp_path: Path) -> None:

    async with two_servers(tmp_path) as (redis_process, a, b):
        a.register_command("lost.echo", lambda **arguments: arguments)
        async with client(b.port) as caller:
            assert await caller.run_command("lost.echo", n=1) == {"n": 1}
        redis_process.client().flushall()

        async def offered_again() -> bool:
            # B's sessions end with the new epoch: each try on a new client
            with contextlib.suppress(ConnectionLostError):
                async with client(b.port) as caller:
                    if "lost.echo" in await caller.available_commands():
                        assert await caller.run_command("lost.echo", n=2) == {"n": 2}
                        return True
            return False

        await eventually(offered_again, "lost.echo offered again", timeout=DEADLINE_S)


async def _until_value(reader: AsyncClient, key: str, value: str) -> None:
    async def became() -> bool:
        return await reader.get(key, None) == value

    await eventually(became, f"{key!r} becoming {value!r}", timeout=DEADLINE_S)


async def test_a_routed_command_runs_where_its_value_is_claimed(tmp_path: Path) -> None:
    from statehub.core.commands import CommandRoute

    def reader(server: str) -> Any:
        def read(instrument: str) -> dict[str, str]:
            return {"server": server, "instrument": instrument}

        return read

    async with two_servers(tmp_path) as (_, a, b):
        for server, name in ((a, "a"), (b, "b")):
            route = CommandRoute("instrument", frozenset({f"lab.{name}"}))
            server.register_command("instrument.read", reader(name), route=route)
        async with client(b.port) as caller:  # at once: B looks again when it finds none
            where = await caller.run_command("instrument.read", instrument="lab.a.volts")
            assert where == {"server": "a", "instrument": "lab.a.volts"}
            where = await caller.run_command("instrument.read", instrument="lab.b")
            assert where == {"server": "b", "instrument": "lab.b"}
            where = await caller.run_command("instrument.read", instrument="lab.c")
            assert where == {"server": "b", "instrument": "lab.c"}  # nobody's: here
            claims_a = CommandRoute("instrument", frozenset({"lab.a"}))
            a.register_command("instrument.claims", reader("a"), route=claims_a)
            with pytest.raises(ValueError, match=r"'lab\.a' is already claimed by server"):
                b.register_command("instrument.claims", reader("b"), route=claims_a)
            assert "instrument.claims" not in b.commands
            a.register_command("fresh.echo", lambda: {"fresh": True})
            assert await caller.run_command("fresh.echo") == {"fresh": True}
            for attempt in range(5):  # a claim A made a moment ago, before B heard of it
                name = f"instrument.read{attempt}"
                for server, owner in ((b, "b"), (a, "a")):
                    route = CommandRoute("instrument", frozenset({f"lab.{owner}"}))
                    server.register_command(name, reader(owner), route=route)
                where = await caller.run_command(name, instrument="lab.a.volts")
                assert where == {"server": "a", "instrument": "lab.a.volts"}


@asynccontextmanager
async def call_hanging(
    owner: Any, via: Any, name: str
) -> AsyncIterator[tuple[AsyncClient, asyncio.Task[Any]]]:
    """A client of ``via`` calling ``name``, a command of ``owner`` that runs until
    cancelled; yields once the command has started, with the call still waiting."""
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    owner.register_command(name, hang)
    async with client(via.port) as caller:
        running = asyncio.create_task(caller.run_command(name))
        await asyncio.wait_for(started.wait(), DEADLINE_S)
        yield caller, running


async def test_redis_going_away_during_a_forwarded_call_ends_it_with_a_clear_error(
    tmp_path: Path,
) -> None:
    from statehub.errors import StoreUnavailableError

    async with (
        two_servers(tmp_path) as (redis_process, a, b),
        call_hanging(a, b, "away.hang") as (_, running),
    ):
        stop(redis_process.process)
        with pytest.raises(StoreUnavailableError, match="unreachable"):
            await asyncio.wait_for(running, DEADLINE_S)


async def test_a_server_stopping_during_a_call_answers_that_it_stops(tmp_path: Path) -> None:
    async with (
        two_servers(tmp_path) as (_, a, b),
        call_hanging(a, b, "stopping.hang") as (caller, running),
    ):
        await a.stop()
        with pytest.raises(CommandUnavailableError, match=r"which is gone \(it is stopping"):
            await asyncio.wait_for(running, DEADLINE_S)
        with pytest.raises(KeyError, match=r"no command named 'stopping\.hang'"):
            await caller.run_command("stopping.hang")  # withdrawn as A stopped
