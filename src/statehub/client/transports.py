"""The ways a client's session frames travel: a gRPC stream, a WebSocket or plain TCP.

``Connection`` speaks frames of bytes and knows nothing else of the transport: it opens a
``FrameStream`` with ``open_frame_stream`` and reads, writes and closes it. An address
starting ``ws://`` or ``wss://`` is a WebSocket URL (path ``/v1/session`` unless given);
one starting ``statehub+tcp://`` or ``statehubs+tcp://`` (TLS) names the plain-TCP
transport's ``host:port``; anything else is a gRPC host name, with the port given apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import grpc
import grpc.aio

from statehub.client.tcp_stream import TcpFrames
from statehub.client.tls import ClientTls
from statehub.protocol import SESSION_PATH

#: Where the web edge serves the session protocol (``statehub.web.edge``).
WEBSOCKET_SESSION_PATH = "/v1/session"
#: Seconds close() waits for the transport to settle the closed stream.
_CLOSE_GRACE = 1.0
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.enable_retries", 0),
    # One TCP connection per client (several clients in a process must not share one).
    ("grpc.use_local_subchannel_pool", 1),
]


class StreamBroken(Exception):
    """The stream failed; ``str()`` says why in words fit for ``ConnectionLost``."""


class FrameStream(Protocol):
    """A bidirectional stream of session-protocol frames."""

    async def write(self, frame: bytes) -> None: ...

    async def read(self) -> bytes | None:
        """The next frame; None once the server has ended the stream."""
        ...

    def abort(self) -> None:
        """Drop the stream now, without waiting (the session broke)."""

    async def close(self) -> None:
        """Drop the stream and wait (briefly) until the transport has let go of it."""


def is_websocket_url(address: str) -> bool:
    return address.startswith(("ws://", "wss://"))


def is_tcp_url(address: str) -> bool:
    return address.startswith(("statehub+tcp://", "statehubs+tcp://"))


def describe_target(address: str, port: int) -> str:
    return address if is_websocket_url(address) or is_tcp_url(address) else f"{address}:{port}"


async def open_frame_stream(address: str, port: int, tls: ClientTls | None = None) -> FrameStream:
    """Connect to the server (over TLS with ``tls``); ``StreamBroken`` if it cannot be reached."""
    if is_websocket_url(address):
        return await WebSocketFrames.open(address, tls)
    if is_tcp_url(address):
        return await TcpFrameStream.open(address, tls)
    return await GrpcFrames.open(f"{address}:{port}", tls)


class GrpcFrames:
    """Frames as the messages of one ``/statehub.v1.Hub/Session`` bidirectional stream."""

    def __init__(self, channel: grpc.aio.Channel, call: Any) -> None:
        self._channel = channel
        self._call = call

    @classmethod
    async def open(cls, target: str, tls: ClientTls | None) -> GrpcFrames:
        if tls is None:
            channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.secure_channel(
                target, tls.channel_credentials(), options=_CHANNEL_OPTIONS + tls.channel_options()
            )
        try:
            await _wait_ready(channel)
            return cls(channel, channel.stream_stream(SESSION_PATH)())
        except BaseException:
            await channel.close()
            raise

    async def write(self, frame: bytes) -> None:
        try:
            await self._call.write(frame)
        except grpc.aio.AioRpcError as error:
            raise StreamBroken(_describe_rpc_error(error)) from None

    async def read(self) -> bytes | None:
        try:
            frame = await self._call.read()
        except grpc.aio.AioRpcError as error:
            raise StreamBroken(_describe_rpc_error(error)) from None
        return None if frame is grpc.aio.EOF else frame

    def abort(self) -> None:
        self._call.cancel()
        closing = asyncio.ensure_future(self._channel.close())
        closing.add_done_callback(lambda _: None)

    async def close(self) -> None:
        self._call.cancel()
        # Let grpc record the call's final status, or its status task can be left
        # pending and asyncio reports "Task was destroyed but it is pending" at loop
        # shutdown (grpc/grpc#41875; grpc's own fix waits on call.code() the same way).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._call.code(), _CLOSE_GRACE)
        await self._channel.close()


async def _wait_ready(channel: grpc.aio.Channel) -> None:
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state in (
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        ):
            raise StreamBroken("connection refused or host unreachable")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def _describe_rpc_error(error: grpc.aio.AioRpcError) -> str:
    details = error.details() or ""
    return f"{error.code().name}{': ' + details if details else ''}"


class WebSocketFrames:
    """Frames as the binary messages of one WebSocket (``ws://host:port/v1/session``)."""

    def __init__(self, http: aiohttp.ClientSession, socket: aiohttp.ClientWebSocketResponse):
        self._http = http
        self._socket = socket

    @classmethod
    async def open(cls, url: str, tls: ClientTls | None) -> WebSocketFrames:
        parts = urlsplit(url)
        if parts.path in ("", "/"):
            url = urlunsplit(parts._replace(path=WEBSOCKET_SESSION_PATH))
        # The client's keepalive is the session's ping (Connection); frames of any size.
        http = aiohttp.ClientSession()
        try:
            socket = await http.ws_connect(
                url,
                max_msg_size=0,
                autoping=True,
                ssl=tls.ssl_context() if tls is not None else True,
                server_hostname=tls.server_name if tls is not None else None,
            )
        except (aiohttp.ClientError, OSError) as error:
            await http.close()
            raise StreamBroken(f"{type(error).__name__}: {error}") from None
        except BaseException:
            await http.close()
            raise
        return cls(http, socket)

    async def write(self, frame: bytes) -> None:
        try:
            await self._socket.send_bytes(frame)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as error:
            raise StreamBroken(f"writing failed: {type(error).__name__}: {error}") from None

    async def read(self) -> bytes | None:
        message = await self._socket.receive()
        if message.type is aiohttp.WSMsgType.BINARY:
            return message.data  # type: ignore[no-any-return]
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            code = self._socket.close_code
            if code in (None, aiohttp.WSCloseCode.OK):
                return None
            raise StreamBroken(
                f"the server closed the WebSocket with {code}: {message.extra or ''}"
            )
        if message.type is aiohttp.WSMsgType.ERROR:
            raise StreamBroken(f"WebSocket error: {self._socket.exception()}")
        raise StreamBroken(f"unexpected WebSocket message of type {message.type.name}")

    def abort(self) -> None:
        closing = asyncio.ensure_future(self.close())
        closing.add_done_callback(lambda _: None)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._socket.close(), _CLOSE_GRACE)
        await self._http.close()


class TcpFrameStream:
    """Frames over one plain TCP connection (``statehub+tcp://host:port``), each one a
    4-byte big-endian length and the frame (``statehub.client.tcp_stream``)."""

    def __init__(self, frames: TcpFrames) -> None:
        self._frames = frames

    @classmethod
    async def open(cls, url: str, tls: ClientTls | None) -> TcpFrameStream:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise StreamBroken(f"{url} names no host and port")
        try:
            frames = await TcpFrames.open(
                parts.hostname,
                parts.port,
                ssl_context=tls.ssl_context() if tls is not None else None,
                server_hostname=tls.server_name if tls is not None else None,
            )
        except ConnectionError as error:
            raise StreamBroken(str(error)) from None
        return cls(frames)

    async def write(self, frame: bytes) -> None:
        try:
            await self._frames.write(frame)
        except (ConnectionError, OSError) as error:
            raise StreamBroken(f"writing failed: {type(error).__name__}: {error}") from None

    async def read(self) -> bytes | None:
        try:
            return await self._frames.read()
        except (ConnectionError, OSError) as error:
            raise StreamBroken(f"{type(error).__name__}: {error}") from None
        except Exception as error:  # the server's last error frame (any type): why it closed
            raise StreamBroken(f"the server closed the connection: {error}") from None

    def abort(self) -> None:
        self._frames.abort()

    async def close(self) -> None:
        await self._frames.close()
