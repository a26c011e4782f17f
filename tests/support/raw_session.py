"""Helpers for the server tests: a raw session-protocol client built on the codec only.

It drives ``/statehub.v1.Hub/Session`` with a bare grpc.aio stream (or ``/v1/session`` of
the web edge with a bare WebSocket, or the plain-TCP port with bare length-prefixed
frames, when ``TRANSPORT`` says so), so the server is tested against the protocol
contract, not against the client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import aiohttp
import grpc

from statehub import StateServer
from statehub.protocol import SESSION_PATH, decode_batch, encode_batch, error_from_wire
from statehub.protocol.tcp_framing import LENGTH_BYTES, encode_length
from statehub.store.memory import MemoryStore
from support.polling import DEADLINE

#: The transport ``running_server`` and ``connected`` use: "grpc", "websocket" or "tcp"
#: (``over`` switches it: tests/test_web_session.py and tests/test_tcp_session.py run the
#: session tests again that way).
TRANSPORT = "grpc"


@contextmanager
def over(transport: str) -> Iterator[None]:
    """``running_server`` and ``connected`` speak ``transport`` within the block."""
    global TRANSPORT
    if transport not in ("grpc", "websocket", "tcp"):
        raise ValueError(f"no raw session transport named {transport!r}")
    TRANSPORT = transport
    try:
        yield
    finally:
        TRANSPORT = "grpc"


class RemoteError(Exception):
    """An error reply: ``wire`` is its error map, ``error`` the exception it stands for."""

    def __init__(self, wire: dict[str, Any]) -> None:
        super().__init__(f"{wire['type']} ({wire['status']}): {wire['message']}")
        self.wire = wire
        self.error = error_from_wire(wire)

    @property
    def status(self) -> str:
        return str(self.wire["status"])


class GatedStore(MemoryStore):
    """A memory store whose changes become durable only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.durable = 0
        self.moved = asyncio.Event()

    def is_durable(self, revision: int) -> bool:
        return revision <= self.durable

    async def wait_durable_async(self, revision: int) -> None:
        while revision > self.durable:
            self.moved.clear()
            await self.moved.wait()

    def on_durable(self, listener: Callable[[], bool]) -> bool:
        return True  # changes are durable (and shown to readers) when the test says so

    @property
    def committed(self) -> int:
        """The last revision committed (durable or not)."""
        return self._revision

    def make_durable(self, revision: int) -> None:
        self.durable = revision
        self.moved.set()


class RawSession:
    """One session over a raw stream: pipelined requests, replies by id, batches by sub."""

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self._metadata = metadata
        self._open(channel)
        self._next_id = 1
        self._replies: dict[int | None, asyncio.Future[dict[str, Any]]] = {}
        self.batches: defaultdict[int, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.frames_seen: list[int] = []  # sizes of the frames received
        self.unmatched: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    def _open(self, channel: Any) -> None:
        self.call = channel.stream_stream(SESSION_PATH)(metadata=self._metadata)

    async def write_frame(self, frame: bytes) -> None:
        await self.call.write(frame)

    async def read_frame(self) -> bytes | None:
        frame = await self.call.read()
        return None if frame is grpc.aio.EOF else frame

    async def _read(self) -> None:
        while True:
            frame = await self.read_frame()
            if frame is None:
                return
            self.frames_seen.append(len(frame))
            for message in decode_batch(frame):
                if "sub" in message and "id" not in message:
                    self.batches[message["sub"]].put_nowait(message)
                elif message.get("id") in self._replies:
                    self._future(message["id"]).set_result(message)
                else:
                    self.unmatched.put_nowait(message)

    def _future(self, request_id: int) -> asyncio.Future[dict[str, Any]]:
        future = self._replies.get(request_id)
        if future is None:
            future = self._replies[request_id] = asyncio.get_running_loop().create_future()
        return future

    async def send(self, op: str, **arguments: Any) -> int:
        """Send one request without waiting for its reply; returns its id."""
        (request_id,) = await self.send_many([{"op": op, **arguments}])
        return request_id

    async def send_many(self, requests: list[dict[str, Any]]) -> list[int]:
        """Send requests in one frame (pipelined); returns their ids."""
        ids = []
        for request in requests:
            request["id"] = self._next_id
            self._future(self._next_id)
            ids.append(self._next_id)
            self._next_id += 1
        await self.write_frame(encode_batch(requests))
        return ids

    async def reply(self, request_id: int, timeout: float = DEADLINE) -> dict[str, Any]:
        """The ``ok`` map of a reply, or ``RemoteError`` for an error reply."""
        message = await asyncio.wait_for(asyncio.shield(self._future(request_id)), timeout)
        if "error" in message:
            raise RemoteError(message["error"])
        return message["ok"]  # type: ignore[no-any-return]

    async def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        return await self.reply(await self.send(op, **arguments))

    async def hello(self, token: str | None = None) -> dict[str, Any]:
        return await self.request("hello", token=token, client="tests")

    async def next_batch(self, sub: int, timeout: float = DEADLINE) -> dict[str, Any]:
        return await asyncio.wait_for(self.batches[sub].get(), timeout)

    async def subscribe(
        self,
        interval: float = 0.0,
        prefix: str = "",
        since: int | None = None,
        epoch: str | None = None,
    ) -> int:
        reply = await self.request(
            "subscribe", interval=interval, prefix=prefix, since=since, epoch=epoch
        )
        return int(reply["sub"])

    async def close(self) -> None:
        """Drop the connection's stream abruptly (as a crashed client would)."""
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class RawWebSocketSession(RawSession):
    """The same over a bare WebSocket to the web edge's ``/v1/session``."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.close_reason = ""
        super().__init__(None)

    def _open(self, channel: Any) -> None:
        pass

    async def write_frame(self, frame: bytes) -> None:
        await self.socket.send_bytes(frame)

    async def read_frame(self) -> bytes | None:
        message = await self.socket.receive()
        if message.type is aiohttp.WSMsgType.BINARY:
            return message.data  # type: ignore[no-any-return]
        if message.type is aiohttp.WSMsgType.CLOSE:
            self.close_reason = str(message.extra or "")
        return None

    async def close(self) -> None:
        """Drop the TCP connection without a close handshake (as a crashed client would)."""
        raw = self.socket.get_extra_info("socket")
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class RawTcpSession(RawSession):
    """The same over a bare TCP connection to the server's ``tcp_port``: each frame a
    4-byte big-endian length, then the frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tcp_reader = reader
        self.tcp_writer = writer
        super().__init__(None)

    def _open(self, channel: Any) -> None:
        pass

    async def write_frame(self, frame: bytes) -> None:
        self.tcp_writer.write(len(frame).to_bytes(4, "big") + frame)
        await self.tcp_writer.drain()

    async def read_frame(self) -> bytes | None:
        try:
            header = await self.tcp_reader.readexactly(4)
            return await self.tcp_reader.readexactly(int.from_bytes(header, "big"))
        except asyncio.IncompleteReadError:
            return None

    async def close(self) -> None:
        """Drop the connection (an RST, as a crashed client's kernel would send)."""
        self.tcp_writer.transport.abort()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@asynccontextmanager
async def running_server(**options: Any) -> AsyncIterator[StateServer]:
    """A real server on 127.0.0.1, port 0, in the running event loop."""
    if TRANSPORT == "websocket":
        options.setdefault("http_port", 0)
    server = StateServer(address="127.0.0.1", port=0, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def connected(server: StateServer, *, hello: bool = True) -> AsyncIterator[RawSession]:
    """A session on its own channel (or WebSocket) to ``server``."""
    if TRANSPORT == "websocket":
        async with websocket_connected(server, hello=hello) as session:
            yield session
        return
    if TRANSPORT == "tcp":
        async with tcp_connected(server, hello=hello) as session:
            yield session
        return
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
        _opened(RawSession(channel), hello) as session,
    ):
        yield session


@asynccontextmanager
async def websocket_connected(
    server: StateServer, *, hello: bool = True
) -> AsyncIterator[RawWebSocketSession]:
    """A session over its own WebSocket to ``server``'s web edge."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{server.http_port}/v1/session", max_msg_size=0) as socket,
        _opened(RawWebSocketSession(socket), hello) as session,
    ):
        yield session


@asynccontextmanager
async def tcp_connected(server: StateServer, *, hello: bool = True) -> AsyncIterator[RawTcpSession]:
    """A session over its own TCP connection to ``server``'s plain-TCP port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
    async with _opened(RawTcpSession(reader, writer), hello) as session:
        yield session


S = TypeVar("S", bound=RawSession)


@asynccontextmanager
async def _opened(session: S, hello: bool) -> AsyncIterator[S]:
    """``session``, after its hello if ``hello``; dropped when the block ends."""
    try:
        if hello:
            await session.hello()
        yield session
    finally:
        await session.close()


def hello_roundtrip(port: int) -> dict[str, Any]:
    """A blocking session-protocol hello against the plain-TCP ``port`` (the one
    ``statehub serve`` prints first), from plain, non-async code."""
    frame = encode_batch([{"id": 1, "op": "hello", "token": "t"}])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(encode_length(frame) + frame)
        size = int.from_bytes(_read_exactly(connection, LENGTH_BYTES), "big")
        reply: dict[str, Any] = decode_batch(_read_exactly(connection, size))[0]
        return reply


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {len(data)} bytes")
        data += chunk
    return data
