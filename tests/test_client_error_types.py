"""An error the server ends a session with reaches the client with its own type, on every
transport: the plain-TCP transport's last frame, a gRPC status, a WebSocket close code."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from statehub import AsyncClient, MessageTooLargeError, ProtocolError, StateServer
from statehub.client.frame_stream import StreamBroken
from statehub.client.transports import open_frame_stream

#: The server's smallest message limit: its transports refuse frames over about 1 MiB.
SMALL_LIMIT = 1024


@pytest.fixture
async def server() -> AsyncIterator[StateServer]:
    server = StateServer(
        address="127.0.0.1", port=0, http_port=0, tcp_port=0, max_message_bytes=SMALL_LIMIT
    )
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
    return "127.0.0.1", server.port


async def test_a_malformed_frame_ends_the_stream_with_a_protocol_error(
    address: tuple[str, int | None],
) -> None:
    host, port = address
    stream = await open_frame_stream(host, port or 0)
    try:
        await stream.write(b"\xc1 not msgpack")
        with pytest.raises(StreamBroken) as broken:
            while await stream.read() is not None:
                pass
    finally:
        await stream.close()
    assert isinstance(broken.value.error, ProtocolError)
    assert "malformed frame" in str(broken.value.error)


async def test_a_call_in_a_frame_over_the_servers_limit_raises_message_too_large(
    address: tuple[str, int | None],
) -> None:
    async with AsyncClient(*address, reconnect=False) as client:
        # A client that believes the server takes any size (the server's own limit is
        # what is tested): its frame is refused by the transport, not by the session.
        (await client._connection()).max_message_bytes = 1 << 30
        with pytest.raises(MessageTooLargeError, match=r"\w"):  # with a message
            await client.set("big", "x" * (3 << 20))
