"""The session protocol over plain TCP: a real listener next to a StateServer's hub."""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from statehub import DictionaryChange, StateServer
from statehub.client.tcp_stream import TcpFrames
from statehub.errors import MessageTooLargeError, ProtocolError
from statehub.protocol import decode_batch, encode_batch, error_from_wire
from statehub.protocol.tcp_framing import encode_length, set_keepalive
from statehub.server.connections import HandshakeDeadlines
from statehub.server.limits import SessionLimits
from statehub.server.tcp_transport import _READ_AHEAD as READ_AHEAD
from statehub.server.tcp_transport import TcpFrames as ServerFrames
from statehub.server.tcp_transport import frame_limit, start_tcp_server
from support.polling import DEADLINE, eventually
from support.raw_session import RemoteError, running_server


class TcpSession:
    """A raw session over ``TcpFrames``: pipelined requests, replies by id, batches by sub."""

    def __init__(self, frames: TcpFrames) -> None:
        self.frames = frames
        self._next_id = 1
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.batches: defaultdict[int, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.ended: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        """Sort the frames; ``ended`` gets the error the session ended with (its last
        message, with no request id), or what broke the stream, or None."""
        last_error: Exception | None = None
        try:
            while (frame := await self.frames.read()) is not None:
                for message in decode_batch(frame):
                    if "sub" in message and "id" not in message:
                        self.batches[message["sub"]].put_nowait(message)
                    elif message.get("id") is None and "error" in message:
                        last_error = error_from_wire(message["error"])
                    else:
                        self._future(message["id"]).set_result(message)
        except Exception as error:  # what ended the stream is what the tests look at
            self.ended.set_result(last_error or error)
        else:
            self.ended.set_result(last_error)

    def _future(self, request_id: int) -> asyncio.Future[dict[str, Any]]:
        if request_id not in self._replies:
            self._replies[request_id] = asyncio.get_running_loop().create_future()
        return self._replies[request_id]

    async def send(self, op: str, **arguments: Any) -> int:
        request_id, self._next_id = self._next_id, self._next_id + 1
        self._future(request_id)
        await self.frames.write(encode_batch([{"id": request_id, "op": op, **arguments}]))
        return request_id

    async def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        request_id = await self.send(op, **arguments)
        message = await asyncio.wait_for(self._future(request_id), DEADLINE)
        if "error" in message:
            raise RemoteError(message["error"])
        return message["ok"]  # type: ignore[no-any-return]

    async def next_batch(self, sub: int) -> dict[str, Any]:
        return await asyncio.wait_for(self.batches[sub].get(), DEADLINE)

    async def end_error(self) -> Exception | None:
        return await asyncio.wait_for(asyncio.shield(self.ended), DEADLINE)

    async def close(self) -> None:
        await self.frames.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@asynccontextmanager
async def tcp_server(**options: Any) -> AsyncIterator[tuple[StateServer, int]]:
    """A StateServer plus a TCP listener on port 0 serving the same hub."""
    async with running_server(**options) as server:
        listener = await start_tcp_server(server.hub, "127.0.0.1", 0, keepalive_time=2.0)
        try:
            yield server, listener.sockets[0].getsockname()[1]
        finally:
            listener.close()
            server.hub.end_sessions()
            await listener.wait_closed()


@asynccontextmanager
async def tcp_session(port: int, *, hello: bool = True) -> AsyncIterator[TcpSession]:
    session = TcpSession(await TcpFrames.open("127.0.0.1", port))
    try:
        if hello:
            await session.request("hello", token=None, client="tests")
        yield session
    finally:
        await session.close()


async def test_hello_update_get_over_tcp() -> None:
    async with tcp_server() as (server, port), tcp_session(port, hello=False) as session:
        hello = await session.request("hello", token="tok", client="tests")
        assert hello["session"] and hello["token"]
        assert hello["max_message_bytes"] == server.max_message_bytes
        (served,) = server.hub.sessions
        assert served.peer.transport == "tcp"
        assert served.peer.address.startswith("tcp:127.0.0.1:")
        revision = (await session.request("update", updates={"a": 1, "b": [1.5, None]}))["revision"]
        got = await session.request("get", keys=None)
        assert got == {"values": {"a": 1, "b": [1.5, None]}, "revision": revision}


async def test_subscribe_with_since_gets_the_delta() -> None:
    async with (
        tcp_server() as (server, port),
        tcp_session(port) as writer,
        tcp_session(port) as reader,
    ):
        first = (await writer.request("update", updates={"x": 1, "y": 1}))["revision"]
        await writer.request("update", updates={"x": 2}, removals=["y"])
        resume = {"since": first, "epoch": server.state.epoch}
        sub = (await reader.request("subscribe", interval=0.0, prefix="", **resume))["sub"]
        batch = await reader.next_batch(sub)
        assert batch["snapshot"] is False
        assert batch["updates"] == {"x": 2}
        assert batch["removals"] == ["y"]
        await writer.request("update", updates={"x": 3})
        assert (await reader.next_batch(sub))["updates"] == {"x": 3}


async def _finish(session: TcpSession) -> None:
    await session.frames.finish()


async def _close(session: TcpSession) -> None:
    await session.frames.close()


async def _abort(session: TcpSession) -> None:
    session.frames.abort()


async def _send_garbage(session: TcpSession) -> None:
    await session.frames.write(b"\xc1 not msgpack")


async def _cut_inside_a_frame(session: TcpSession) -> None:
    session.frames._writer.write(encode_length(b"x" * 100) + b"x" * 10)
    await session.frames.finish()


@pytest.mark.parametrize(
    "end", [_finish, _close, _abort, _send_garbage, _cut_inside_a_frame], ids=lambda f: f.__name__
)
async def test_leases_released_however_the_stream_ends(
    end: Callable[[TcpSession], Awaitable[None]],
) -> None:
    async with tcp_server() as (server, port), tcp_session(port) as other:
        async with tcp_session(port) as holder:
            await holder.request("leases", acquire={"k": None}, release=[])
            with pytest.raises(RemoteError, match="k"):
                await other.request("update", updates={"k": "stolen"})
            await end(holder)
            await eventually(lambda: len(server.hub.sessions) == 1)
        await other.request("update", updates={"k": "mine now"})
        assert server.copy_state()["k"] == "mine now"


async def test_half_close_still_answers_what_was_sent() -> None:
    async with tcp_server() as (server, port), tcp_session(port) as session:
        request_id = await session.send("update", updates={"last": True})
        await session.frames.finish()
        assert await session.end_error() is None
        assert session._future(request_id).result()["ok"]["revision"] >= 1
        assert server.copy_state()["last"] is True


async def test_malformed_frame_is_refused_with_a_clear_error() -> None:
    async with tcp_server() as (server, port), tcp_session(port) as session:
        await session.frames.write(b"\xc1 not msgpack")
        error = await session.end_error()
        assert isinstance(error, ProtocolError)
        assert "malformed frame" in str(error)
        await eventually(lambda: not server.hub.sessions)


async def test_oversize_frame_is_refused_before_its_body_arrives() -> None:
    async with tcp_server(max_message_bytes=1024) as (server, port), tcp_session(port) as session:
        limit = frame_limit(1024)
        # Only the length is sent: the server must refuse it without waiting for the body.
        session.frames._writer.write((limit + 1).to_bytes(4, "big"))
        error = await session.end_error()
        assert isinstance(error, MessageTooLargeError)
        assert f"{limit + 1} bytes" in str(error) and f"limit of {limit}" in str(error)
        await eventually(lambda: not server.hub.sessions)


async def test_frame_over_max_message_bytes_gets_error_replies() -> None:
    async with tcp_server(max_message_bytes=1024) as (server, port), tcp_session(port) as session:
        with pytest.raises(RemoteError, match="over the limit of 1024 bytes"):
            await session.request("update", updates={"big": "x" * 2000})
        assert "big" not in server.copy_state()
        await session.request("ping")  # the session goes on


async def test_server_stop_ends_the_stream() -> None:
    async with tcp_server() as (server, port), tcp_session(port) as session:
        server.hub.end_sessions()
        assert await session.end_error() is None
        await eventually(lambda: not server.hub.sessions)


async def test_connecting_to_a_closed_port_says_where() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        await TcpFrames.open("127.0.0.1", port)


async def test_both_ends_ask_the_kernel_to_notice_a_dead_peer() -> None:
    async with tcp_server() as (_, port), tcp_session(port) as session:
        sock = session.frames._writer.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    with socket.socket() as sock:
        set_keepalive(sock, idle=2.0, timeout=6.0)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 8000


async def test_a_client_that_sends_without_reading_stops_being_read() -> None:
    """Past its byte limit the session stops taking requests; past the read-ahead the
    connection stops being read (TCP holds the client back), and nothing is lost."""
    limit = 1024 * 1024
    async with running_server(limits=SessionLimits(max_queued_bytes=limit)) as server:
        server.update_state(None, DictionaryChange({"big": list(range(50_000))}))
        with socket.create_server(("127.0.0.1", 0)) as listening:  # a connected TCP pair
            client = socket.create_connection(listening.getsockname())
            served, _ = listening.accept()
        max_frame = frame_limit(server.max_message_bytes)
        frames = ServerFrames(server.hub, max_frame, (2.0, 5.0), HandshakeDeadlines())
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: frames, served)
        reader, writer = await asyncio.open_connection(sock=client)
        try:
            requests = [{"id": 0, "op": "hello", "token": None, "client": "greedy"}]
            padding = "x" * 10_000  # unknown fields are ignored: 400 requests of 10 kB
            requests += [
                {"id": i, "op": "get", "keys": ["big"], "pad": padding} for i in range(1, 401)
            ]
            for request in requests:  # never reading a reply, never waiting to send
                frame = encode_batch([request])
                writer.write(encode_length(frame) + frame)
            await eventually(lambda: frames._paused_reading)
            # Of the 4 MB sent: the read-ahead plus at most one socket read (256 KiB).
            assert len(frames._buffer) <= READ_AHEAD + 256 * 1024
            (session,) = server.hub.sessions
            assert session.queued_bytes <= limit + 200_000
            replies = 0  # reading resumes as the client reads: every request has its reply
            while replies < len(requests):
                header = await asyncio.wait_for(reader.readexactly(4), DEADLINE)
                body = await asyncio.wait_for(reader.readexactly(int.from_bytes(header)), DEADLINE)
                replies += len(decode_batch(body))
            assert replies == len(requests)
            assert not frames._paused_reading
        finally:
            writer.close()
