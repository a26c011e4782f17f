"""Every edge against every store: the rules of ``server/operations`` hold the same way.

Edges: the session protocol over gRPC, TCP and WebSocket (statehub's AsyncClient), NanoVer's
gRPC services (NanoVer's generated stubs), NanoVer's WebSocket protocol (a bare msgpack
WebSocket, as NanoVer's clients speak it) and the dripline mesh (statehub's dripline client
over a real RabbitMQ, started once for the module). Stores: memory, SQLite, and Redis (a
real redis-server started once for the module). Each server runs with ``--auth``
identities (tests/support/auth.py: walt writes and leases ``lab/w/``, rita only reads, ada
is admin).

Dripline changes only endpoint values, which the endpoint service holds under a lease of
its own, and guards them with dripline's lockout rather than leases; the mesh has no
per-client identity (the broker's account admits a peer) and no per-client limits. So its
tests are the behaviours it shares: its writes seen by the others and theirs by it, a
lockout taken on one edge holding on the other, and the service's lease keeping other
edges' plain writes off its keys. They start RabbitMQ, so they are marked ``system``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import msgpack
import pytest
from google.protobuf import struct_pb2

from statehub import AsyncClient, DictionaryChange, StateDictionary, StateServer
from statehub.bench.fleet import RedisProcess, start_redis, stop
from statehub.dripline.broker import TemporaryBroker
from statehub.dripline.client import AsyncDriplineClient
from statehub.dripline.mesh import MeshService
from statehub.dripline.settings import mesh_settings
from statehub.endpoints.attach import endpoints_running
from statehub.endpoints.config import parse_config
from statehub.endpoints.return_codes import AccessDeniedError
from statehub.server.limits import SessionLimits
from support import nanover_modules
from support.auth import TOKENS, identities, write_identities
from support.brokers import temporary_broker
from support.polling import DEADLINE, eventually

state_pb2, state_pb2_grpc, _, _ = nanover_modules.load()

STORES = ["memory", "sqlite", "redis"]
#: Each transport of the session protocol: its URL scheme and the server's port for it.
SESSION_EDGES = {
    "session-grpc": ("statehub+grpc", "grpc_port"),
    "session-tcp": ("statehub", "tcp_port"),
    "session-websocket": ("ws", "http_port"),
}
EDGES = [*SESSION_EDGES, "nanover-grpc", "nanover-websocket"]
#: Small bounds, so each edge's limit is reached with a few requests.
LIMITS = SessionLimits(max_leases=2, max_pending_requests=4)
MAX_MESSAGE_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    process = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield process
    finally:
        stop(process.process)


@pytest.fixture(params=STORES)
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateServer]:
    auth = write_identities(tmp_path / "identities.yaml", identities())
    options: dict[str, Any] = {}
    closing = None
    if request.param == "sqlite":
        from statehub.store.sqlite import SQLiteStore

        closing = SQLiteStore(tmp_path / "data")
        options["state"] = StateDictionary(store=closing)
    elif request.param == "redis":
        from statehub.store.redis import RedisStore

        redis: RedisProcess = request.getfixturevalue("redis_process")
        flushing = redis.client()
        flushing.flushall()  # each test starts from an empty state, as on the other stores
        flushing.close()
        redis_store = RedisStore(redis.url, liveness_ttl=1.0, heartbeat=0.2)
        closing = redis_store
        options["state"] = StateDictionary(store=redis_store)
    running = StateServer(
        address="127.0.0.1",
        port=0,
        http_port=0,
        auth=auth,
        limits=LIMITS,
        max_message_bytes=MAX_MESSAGE_BYTES,
        **options,
    )
    try:
        async with running:
            yield running
    finally:
        if closing is not None:
            closing.close()


class SessionEdge:
    """A statehub client on one of the session protocol's transports."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def write(self, updates: dict[str, Any]) -> bool | str:
        """True if applied, False if refused for another's lease, else the error's type."""
        try:
            return await self.client.attempt_update_state(DictionaryChange(updates))
        except Exception as error:
            return _error_type(error)

    async def lease(self, keys: list[str]) -> bool | str:
        try:
            return await self.client.attempt_update_locks(dict.fromkeys(keys, 60.0))
        except Exception as error:
            return _error_type(error)


class NanoverGrpcEdge:
    """A NanoVer gRPC client: its calls on NanoVer's stubs, with a bearer token."""

    def __init__(self, channel: grpc.aio.Channel, user: str, access_token: str) -> None:
        self.state = state_pb2_grpc.StateStub(channel)
        self.metadata = (("authorization", f"Bearer {TOKENS[user]}"),)
        self.access_token = access_token

    async def write(self, updates: dict[str, Any]) -> bool | str:
        request = state_pb2.UpdateStateRequest(
            access_token=self.access_token,
            update=state_pb2.StateUpdate(changed_keys=_struct(updates)),
        )
        try:
            return bool((await self.state.UpdateState(request, metadata=self.metadata)).success)
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)

    async def lease(self, keys: list[str]) -> bool | str:
        request = state_pb2.UpdateLocksRequest(
            access_token=self.access_token, lock_keys=_struct(dict.fromkeys(keys, 60.0))
        )
        try:
            return bool((await self.state.UpdateLocks(request, metadata=self.metadata)).success)
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)


class NanoverSocketEdge:
    """A NanoVer WebSocket client: state messages out, errors and state in."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse, server: StateServer) -> None:
        self.socket = socket
        self.server = server
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type is aiohttp.WSMsgType.BINARY:
                decoded = msgpack.unpackb(message.data)
                if "error" in decoded:
                    self.errors.put_nowait(decoded["error"])

    async def send(self, message: dict[str, Any]) -> None:
        await self.socket.send_bytes(msgpack.packb(message))

    async def write(self, updates: dict[str, Any]) -> bool | str:
        """NanoVer acknowledges nothing: applied once the state shows it, refused once an
        error names why (False for another's lease, else the error's type)."""
        await self.send({"state": {"updates": updates, "removals": []}})
        refused = asyncio.ensure_future(self.errors.get())

        def outcome() -> tuple[bool | str] | None:
            if refused.done():
                kind = refused.result()["type"]
                return (False if kind == "ResourceLockedError" else str(kind),)
            if all(self.server.state.get(key) == value for key, value in updates.items()):
                return (True,)
            return None

        try:
            (answer,) = await eventually(outcome, f"{updates} applied or refused")
        finally:
            refused.cancel()
        return answer

    async def close(self) -> None:
        await self.socket.close()
        await asyncio.gather(self._reader, return_exceptions=True)


@asynccontextmanager
async def edge(
    kind: str, server: StateServer, user: str, *, access_token: str = "t"
) -> AsyncIterator[Any]:
    """A client of ``server`` on edge ``kind``, as ``user``, closed when the block ends."""
    if kind in SESSION_EDGES:
        scheme, port = SESSION_EDGES[kind]
        url = f"{scheme}://127.0.0.1:{getattr(server, port)}"
        async with AsyncClient(url, credential=TOKENS[user], reconnect=False) as client:
            yield SessionEdge(client)
    elif kind == "nanover-grpc":
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
        address = f"127.0.0.1:{server.grpc_port}"
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            yield NanoverGrpcEdge(channel, user, access_token)
    else:
        headers = {"Authorization": f"Bearer {TOKENS[user]}"}
        async with aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{server.http_port}"
            socket = await http.ws_connect(url, headers=headers, max_msg_size=0)
            connection = NanoverSocketEdge(socket, server)
            try:
                yield connection
            finally:
                await connection.close()


@pytest.mark.parametrize("kind", EDGES)
async def test_writes_are_seen_by_the_others(kind: str, server: StateServer) -> None:
    async with (
        edge(kind, server, "walt") as writer,
        AsyncClient("127.0.0.1", server.port, credential=TOKENS["rita"]) as reader,
    ):
        assert await writer.write({"lab/w/seen": 7}) is True
        changes = reader.subscribe(prefix="lab/w/")
        first = await asyncio.wait_for(anext(changes), DEADLINE)
        assert first.updates == {"lab/w/seen": 7}  # 7.0 on NanoVer's gRPC: equal
        await changes.aclose()


@pytest.mark.parametrize("kind", EDGES)
async def test_a_foreign_lease_is_respected(kind: str, server: StateServer) -> None:
    async with edge("session-grpc", server, "ada") as holder, edge(kind, server, "walt") as other:
        assert await holder.lease(["lab/w/held"]) is True
        assert await other.write({"lab/w/held": "taken", "lab/w/beside": 1}) is False
        assert server.state.get("lab/w/held") is None
        assert server.state.get("lab/w/beside") is None  # all or nothing


@pytest.mark.parametrize("kind", [*SESSION_EDGES])
async def test_leases_are_released_when_a_session_disconnects(
    kind: str, server: StateServer
) -> None:
    async with edge("session-grpc", server, "walt") as other:
        async with edge(kind, server, "walt") as holder:
            assert await holder.lease(["lab/w/mine"]) is True
            assert await other.write({"lab/w/mine": "no"}) is False
        await eventually(lambda: not server.state.leases())
        assert await other.write({"lab/w/mine": "free"}) is True


async def test_a_nanover_token_keeps_its_lease_across_connections(server: StateServer) -> None:
    async with edge("session-grpc", server, "walt") as other:
        async with edge("nanover-grpc", server, "walt", access_token="vr-1") as holder:
            assert await holder.lease(["lab/w/vr"]) is True
        assert await other.write({"lab/w/vr": "no"}) is False  # its token still holds it
        async with edge("nanover-grpc", server, "ada", access_token="vr-1") as impostor:
            assert await impostor.write({"lab/w/vr": "no"}) is False  # another identity
        async with edge("nanover-grpc", server, "walt", access_token="vr-1") as back:
            assert await back.write({"lab/w/vr": "mine"}) is True


async def test_a_nanover_users_keys_leave_with_its_connection(server: StateServer) -> None:
    async with edge("nanover-websocket", server, "ada") as user:
        mine = {"avatar.u1": {"name": "Ana"}, "selection.u1.2": [1, 2]}
        assert await user.write({**mine, "scene": "kept"}) is True
    await eventually(lambda: server.state.get("avatar.u1") is None)
    assert server.state.get("selection.u1.2") is None
    assert server.state.get("scene") == "kept"  # not the user's key: it stays


@pytest.mark.parametrize("kind", EDGES)
async def test_rights_are_enforced(kind: str, server: StateServer) -> None:
    async with edge(kind, server, "rita") as reader:
        refused = await reader.write({"lab/w/denied": 1})
    assert refused in ("PermissionDeniedError", "PERMISSION_DENIED")
    assert server.state.get("lab/w/denied") is None


@pytest.mark.parametrize("kind", EDGES)
async def test_limits_are_enforced(kind: str, server: StateServer) -> None:
    async with edge(kind, server, "walt") as client:
        if kind in SESSION_EDGES:  # max_leases=2
            assert await client.lease(["lab/w/1", "lab/w/2", "lab/w/3"]) == "LimitExceededError"
            assert not server.state.leases()
        elif kind == "nanover-grpc":  # max_message_bytes
            refused = await client.write({"lab/w/big": "x" * MAX_MESSAGE_BYTES})
            assert refused == "RESOURCE_EXHAUSTED"
            assert server.state.get("lab/w/big") is None
        else:  # max_pending_requests: more command payloads in one message are refused
            request = {"request": {"name": "echo", "arguments": {}, "id": 1}}
            await client.send({"command": [request] * (LIMITS.max_pending_requests + 1)})
            error = await asyncio.wait_for(client.errors.get(), DEADLINE)
            assert error["type"] == "LimitExceededError"


def _struct(mapping: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(mapping)
    return struct


def _error_type(error: Exception) -> str:
    """The statehub error type a client reports (a ``RemoteError`` carries it by name)."""
    return str(getattr(error, "type", None) or type(error).__name__)


async def test_a_nanover_write_never_holds_up_the_server_on_redis(
    redis_process: RedisProcess, tmp_path: Path
) -> None:
    """With Redis stopped (SIGSTOP), a NanoVer ``state`` message waits for Redis without
    holding the event loop: another client's ``get`` (served from the server's copy) is
    answered while Redis is still stopped. A blocking commit would answer it only after."""
    from statehub.store.redis import RedisStore

    store = RedisStore(redis_process.url)
    server = StateServer(
        address="127.0.0.1",
        port=0,
        http_port=0,
        state=StateDictionary(store=store),
    )
    try:
        async with (
            server,
            edge("session-grpc", server, "ada") as reader,
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{server.http_port}") as socket,
        ):
            paused = threading.Event()
            os.kill(redis_process.process.pid, signal.SIGSTOP)
            paused.set()
            resume = threading.Timer(5.0, _resume, (redis_process, paused))
            resume.start()
            try:
                await socket.send_bytes(msgpack.packb({"state": {"updates": {"during": 1}}}))
                await asyncio.wait_for(reader.client.get("anything"), DEADLINE)
                answered_while_paused = paused.is_set()
            finally:
                resume.cancel()
                _resume(redis_process, paused)
            assert answered_while_paused
            await eventually(lambda: server.state.get("during") == 1)  # applied once resumed
    finally:
        store.close()


def _resume(redis: RedisProcess, paused: threading.Event) -> None:
    if paused.is_set():
        paused.clear()
        os.kill(redis.process.pid, signal.SIGCONT)


#: The endpoint the dripline tests change: the key ``lab.plain`` of the shared state,
#: leased by the endpoint service (so it changes only through endpoint operations).
DRIPLINE_LAB = """
name: lab
endpoints:
  - {name: plain, initial_value: 1}
"""
DRIPLINE_KEY = "lab.plain"


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[TemporaryBroker]:
    """One RabbitMQ for the module's dripline tests (it takes seconds to start)."""
    yield from temporary_broker()


@pytest.fixture
async def dripline(
    server: StateServer, rabbitmq: TemporaryBroker
) -> AsyncIterator[AsyncDriplineClient]:
    """``server`` serving ``DRIPLINE_LAB`` on the mesh, and a dripline client of it."""
    settings = mesh_settings(rabbitmq.url, environ={})
    async with (
        endpoints_running(server, parse_config(DRIPLINE_LAB, "lab.yaml")) as endpoints,
        MeshService(endpoints, settings) as mesh,
    ):
        await mesh.wait_connected(DEADLINE)
        async with AsyncDriplineClient(settings=settings, timeout=DEADLINE) as client:
            yield client


@pytest.mark.system  # starts RabbitMQ (tests/conftest.py: system tests run on 3.11 only)
async def test_dripline_writes_are_seen_by_the_others(
    server: StateServer, dripline: AsyncDriplineClient
) -> None:
    async with edge("session-tcp", server, "ada") as other:
        changes = other.client.subscribe(prefix=DRIPLINE_KEY)
        assert (await asyncio.wait_for(anext(changes), DEADLINE)).updates == {DRIPLINE_KEY: 1}
        assert (await dripline.set("plain", 5)).return_code == 0
        assert (await asyncio.wait_for(anext(changes), DEADLINE)).updates == {DRIPLINE_KEY: 5}
        await changes.aclose()
        await other.client.endpoint_set("plain", 6)  # and the other way
        assert (await dripline.get("plain")).payload == {"value_raw": 6, "value_cal": 6}


@pytest.mark.system
async def test_dripline_and_the_session_respect_each_others_lockout(
    server: StateServer, dripline: AsyncDriplineClient
) -> None:
    async with edge("session-tcp", server, "walt") as other:
        key = (await other.client.endpoint_cmd("plain", "lock"))["key"]
        with pytest.raises(AccessDeniedError, match="locked"):
            await dripline.set("plain", 2)
        assert (await dripline.set("plain", 3, lockout_key=key)).return_code == 0
        assert server.state.get(DRIPLINE_KEY) == 3
        await other.client.endpoint_cmd("plain", "unlock", lockout_key=key)

        key = (await dripline.cmd("plain", "lock")).payload["key"]  # type: ignore[index]
        with pytest.raises(AccessDeniedError, match="locked"):
            await other.client.endpoint_set("plain", 4)
        assert server.state.get(DRIPLINE_KEY) == 3


@pytest.mark.system
async def test_the_endpoint_services_lease_keeps_session_writes_off_a_dripline_key(
    server: StateServer, dripline: AsyncDriplineClient
) -> None:
    async with edge("session-tcp", server, "ada") as admin:
        assert await admin.write({DRIPLINE_KEY: "around the endpoint"}) is False
    assert (await dripline.get("plain")).payload == {"value_raw": 1, "value_cal": 1}
