"""An error the server ends a session with reaches the client with its own type, on every
transport: the plain-TCP transport's last frame, a gRPC status, a WebSocket close code."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from statehub import AsyncClient, Client, MessageTooLargeError, ProtocolError, StateServer
from statehub.client.frame_stream import StreamBroken
from statehub.client.transports import open_frame_stream
from statehub.errors import ConnectionLostError, HeartbeatTimeoutError
from statehub.protocol import decode_batch, encode_batch, error_from_wire

#: The server's smallest message limit: its transports refuse frames over about 1 MiB.
SMALL_LIMIT = 1024


@pytest.fixture
async def server() -> AsyncIterator[StateServer]:
    server = StateServer(address="127.0.0.1", port=0, http_port=0, max_message_bytes=SMALL_LIMIT)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(params=["grpc", "tcp", "websocket"])
def address(request: pytest.FixtureRequest, server: StateServer) -> tuple[str, int | None]:
    """The server's address on one transport, and gRPC's port (a URL names its own)."""
    if request.param == "tcp":
        return f"statehub+tcp://127.0.0.1:{server.tcp_port}", None
    if request.param == "websocket":
        return f"ws://127.0.0.1:{server.http_port}", None
    return "127.0.0.1", server.grpc_port


async def test_a_malformed_frame_gets_the_same_last_message_on_every_transport(
    address: tuple[str, int | None],
) -> None:
    """The session queues the error; the transport writes it like any frame and closes
    (gRPC then ends the call with the error's status too)."""
    host, port = address
    stream = await open_frame_stream(host, port or 0)
    messages: list[dict[str, object]] = []
    try:
        await stream.write(b"\xc1 not msgpack")
        with contextlib.suppress(StreamBroken):
            while (frame := await stream.read()) is not None:
                messages += decode_batch(frame)
    finally:
        await stream.close()
    [last] = messages
    assert last["id"] is None
    error = error_from_wire(last["error"])
    assert isinstance(error, ProtocolError)
    assert "malformed frame" in str(error)


async def test_a_malformed_frame_fails_the_clients_waiting_call_with_protocol_error(
    address: tuple[str, int | None],
) -> None:
    host, grpc_port = address
    url = host if grpc_port is None else f"statehub+grpc://{host}:{grpc_port}"
    async with AsyncClient(url, reconnect=False) as client:
        connection = await client._connection()
        waiting = connection.send("lock", {"key": "L", "exclusive": True, "owner": ""})
        await waiting  # granted: the session is live
        blocked = connection.send("lock", {"key": "L", "exclusive": True, "owner": "other"})
        assert connection._stream is not None
        # written while the connection's writer sends `blocked`: writes that overlap
        await connection._stream.write(b"\xc1 not msgpack")
        with pytest.raises(ProtocolError, match="malformed frame"):
            await blocked


async def test_a_call_in_a_frame_over_the_servers_limit_raises_message_too_large(
    address: tuple[str, int | None],
) -> None:
    host, grpc_port = address  # a bare host is gRPC's (open_frame_stream's convention)
    url = host if grpc_port is None else f"statehub+grpc://{host}:{grpc_port}"
    async with AsyncClient(url, reconnect=False) as client:
        # A client that believes the server takes any size (the server's own limit is
        # what is tested): its frame is refused by the transport, not by the session.
        (await client._connection()).max_message_bytes = 1 << 30
        with pytest.raises(MessageTooLargeError, match=r"\w"):  # with a message
            await client.set("big", "x" * (3 << 20))


async def test_the_blocking_client_over_tcp_raises_the_servers_error_too(
    server: StateServer,
) -> None:
    url = f"statehub+tcp://127.0.0.1:{server.tcp_port}"

    def oversized_call() -> None:  # in a thread: the server runs in this loop
        with Client(url, reconnect=False) as client:
            client._session.max_message_bytes = 1 << 30  # see the test above
            client.set("big", "x" * (3 << 20))

    with pytest.raises(MessageTooLargeError, match=r"\w"):
        await asyncio.to_thread(oversized_call)


async def test_a_silent_tcp_session_ends_with_a_heartbeat_timeout_of_its_own_type() -> None:
    """Plain TCP: a client that answers no ping is told why it is dropped, typed."""
    server = StateServer(address="127.0.0.1", port=0, keepalive_time=0.3, keepalive_timeout=0.3)
    await server.start()
    try:
        stream = await open_frame_stream(f"statehub+tcp://127.0.0.1:{server.tcp_port}", 0)
        messages: list[dict[str, object]] = []
        try:
            await stream.write(encode_batch([{"id": 1, "op": "hello", "client": "silent"}]))
            while (frame := await asyncio.wait_for(stream.read(), 10)) is not None:
                messages += decode_batch(frame)  # the hello reply, a ping, the last message
        finally:
            await stream.close()
        assert [message.get("ping") for message in messages if "ping" in message] == [1]
        last = messages[-1]
        assert last["id"] is None
        error = error_from_wire(last["error"])
        assert isinstance(error, HeartbeatTimeoutError)
        assert isinstance(error, ConnectionLostError)
        assert "no answer to a ping within 0.3 s" in str(error)
        assert not server.hub.sessions
    finally:
        await server.stop()
