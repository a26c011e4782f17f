"""The session protocol over WebSocket (the web edge's ``/v1/session``).

Every transport-neutral test of tests/test_server_session.py runs again here over a bare
WebSocket; the tests below cover what differs (close codes instead of gRPC statuses) and
the two transports sharing one state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

import test_server_session as session_tests
from statehub import AsyncClient, DictionaryChange, StateServer
from statehub.errors import ConnectionLostError
from statehub.protocol import encode_batch
from support import raw_session
from support.polling import eventually
from support.raw_session import RemoteError, running_server, websocket_connected

#: Tests of test_server_session that look at the gRPC stream itself; their WebSocket
#: counterparts are below.
_GRPC_ONLY = {
    "test_a_frame_far_over_the_limit_ends_the_stream",
    "test_a_malformed_frame_ends_only_that_session",
    "test_ending_the_request_stream_ends_the_session",
    "test_stopping_the_server_ends_sessions_cleanly",
}

for _name in dir(session_tests):
    if _name.startswith("test_") and _name not in _GRPC_ONLY:
        globals()[_name] = getattr(session_tests, _name)


@pytest.fixture(autouse=True)
def over_websocket() -> Iterator[None]:
    with raw_session.over("websocket"):
        yield


async def test_a_frame_far_over_the_limit_closes_with_1009() -> None:
    async with (
        running_server(max_message_bytes=10_000) as server,
        websocket_connected(server) as session,
    ):
        await session.write_frame(encode_batch([{"id": 1, "op": "ping", "pad": "x" * 3_000_000}]))
        await eventually(lambda: session.socket.closed)
        assert session.socket.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await eventually(lambda: not server.hub.sessions)


async def test_a_malformed_frame_closes_only_that_socket_with_a_reason() -> None:
    async with (
        running_server() as server,
        websocket_connected(server) as good,
        websocket_connected(server) as bad,
    ):
        await bad.write_frame(b"\xc1 not msgpack")
        await eventually(lambda: bad.socket.closed)
        assert bad.socket.close_code == aiohttp.WSCloseCode.PROTOCOL_ERROR
        assert await good.request("ping") == {}


async def test_a_text_message_is_refused_by_name() -> None:
    async with running_server() as server, websocket_connected(server) as session:
        await session.socket.send_str("hello")
        message = await asyncio.wait_for(session.unmatched.get(), 10)  # the last: why
        assert message["id"] is None and message["error"]["type"] == "ProtocolError"
        assert "binary" in message["error"]["message"]
        await eventually(lambda: session.socket.closed)
        assert session.socket.close_code == aiohttp.WSCloseCode.PROTOCOL_ERROR
        assert session.close_reason == "ProtocolError"


async def test_closing_the_socket_ends_the_session_and_releases_its_leases() -> None:
    async with running_server() as server, websocket_connected(server) as session:
        await session.request("leases", acquire={"k": None})
        assert server.state.leases()
        await session.socket.close()
        await eventually(lambda: not server.state.leases() and not server.hub.sessions)


async def test_stopping_the_server_closes_sockets_normally() -> None:
    server_cm = running_server(http_port=0)
    server = await server_cm.__aenter__()
    async with websocket_connected(server) as session:
        await session.request("update", updates={"a": 1})
        await server_cm.__aexit__(None, None, None)
        await eventually(lambda: session.socket.closed)
        assert session.socket.close_code == aiohttp.WSCloseCode.OK


async def test_a_plain_get_on_the_session_path_is_told_to_upgrade() -> None:
    async with (
        running_server() as server,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}/v1/session") as response,
    ):
        assert response.status == 400
        assert "WebSocket upgrade" in await response.text()


async def test_a_websocket_client_leases_block_grpc_writers_until_it_disconnects() -> None:
    async with running_server() as server:
        over_ws = AsyncClient(f"ws://127.0.0.1:{server.http_port}", reconnect=False)
        over_grpc = AsyncClient(f"statehub+grpc://127.0.0.1:{server.grpc_port}")
        try:
            assert await over_ws.attempt_update_locks({"k": 60})
            assert not await over_grpc.attempt_update_state(DictionaryChange({"k": 1}))
            await over_ws.close()
            await eventually(lambda: not server.state.leases())
            await over_grpc.set("k", 1)
        finally:
            await over_ws.close()
            await over_grpc.close()


async def test_an_unreachable_websocket_url_fails_with_connection_lost() -> None:
    client = AsyncClient("ws://127.0.0.1:1", reconnect=False, connect_timeout=5)
    with pytest.raises(ConnectionLostError, match=r"ws://127\.0\.0\.1:1"):
        await client.connect()
    await client.close()


_ = RemoteError  # the re-run session tests need it importable from this module's namespace


async def test_a_peer_that_stops_answering_pings_is_dropped_and_its_leases_released() -> None:
    async with (
        running_server(keepalive_time=0.5) as server,
        aiohttp.ClientSession() as http,
        # autoping off and nothing read: the TCP connection stays open, but no pong comes.
        http.ws_connect(f"ws://127.0.0.1:{server.http_port}/v1/session", autoping=False) as socket,
    ):
        await socket.send_bytes(
            encode_batch(
                [
                    {"id": 1, "op": "hello", "token": "sleeper"},
                    {"id": 2, "op": "leases", "acquire": {"k": None}},
                ]
            )
        )
        await eventually(lambda: [lease.key for lease in server.state.leases()] == ["k"])
        await eventually(lambda: not server.state.leases() and not server.hub.sessions)


async def test_a_web_port_in_use_fails_start_with_a_clear_message() -> None:
    async with running_server() as taken:
        server = StateServer(address="127.0.0.1", port=0, http_port=taken.http_port)
        with pytest.raises(OSError, match=f"HTTP on 127.0.0.1:{taken.http_port}"):
            await server.start()
        with pytest.raises(RuntimeError, match="not running"):
            _ = server.http_port
