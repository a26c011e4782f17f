"""One hostile client must not hurt everyone (issue 24, items 3 to 7).

Each test runs a real ``statehub serve`` child process on 127.0.0.1, attacks it from this
process, and meanwhile has a canary session-protocol client write and time its writes.
What each test holds the server to:

- the canary's write latency: what the attack adds to its p99 (against the p99 it measured
  on the same server just before) under ``ATTACK_ADDS_AT_MOST``, 100 ms (``Canary``);
- the server's memory (VmRSS of the child, from ``/proc``): growth under a stated bound;
- after the attacker leaves: what it held (registrations, leases, tasks) is released.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from statehub import AsyncClient
from statehub.server.connections import HandshakeDeadlines, RateLimitedLoopErrors
from support.polling import eventually

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")

SERVE = [sys.executable, "-c", "from statehub.cli import main; main()", "serve"]
#: Seconds any wait in these tests may take before it fails.
DEADLINE = 60.0
#: What an attack may add to the canary's p99 write latency (over at least 100 writes),
#: against its p99 on the same server just before the attack (``Canary``). Before these
#: fixes the same attacks stalled it for 17 to 50 s.
ATTACK_ADDS_AT_MOST = 0.100
MIB = 1024 * 1024
#: How much the server's resident memory may grow during an attack, and what it may keep
#: after the attacker left (VmRSS; allocator arenas do not all go back at once).
MEMORY_GROWTH = 64 * MIB


class Server:
    """A ``statehub serve`` child: its ports and its resident memory."""

    def __init__(self, process: subprocess.Popen[str], ports: dict[str, int]) -> None:
        self.process = process
        self.port = ports["grpc"]
        self.http_port = ports["http"]
        self.tcp_port = ports["tcp"]
        #: Processes of the test's own (canaries) stopped with the server.
        self.children: list[subprocess.Popen[str]] = []

    def rss(self) -> int:
        """Resident bytes of the server now."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None
        return int(match.group(1)) * 1024

    @property
    def nanover_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/"


@contextlib.contextmanager
def serving(
    *options: str, preexec_fn: Callable[[], None] | None = None, log: Path | None = None
) -> Iterator[Server]:
    log_file = log.open("w") if log is not None else None
    process = subprocess.Popen(
        [*SERVE, "--port", "0", "--host", "127.0.0.1", "--tcp-port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if log_file is None else log_file,
        text=True,
        preexec_fn=preexec_fn,
    )
    try:
        assert process.stdout is not None
        ports: dict[str, int] = {}
        patterns = {
            "grpc": r"gRPC on 127\.0\.0\.1:(\d+)",
            "http": r"web edge on http://127\.0\.0\.1:(\d+)",
            "tcp": r"serving on 127\.0\.0\.1:(\d+)",
        }
        for _ in range(10):
            line = process.stdout.readline()
            for name, pattern in patterns.items():
                if match := re.search(pattern, line):
                    ports[name] = int(match.group(1))
            if len(ports) == len(patterns) or not line:
                break
        assert len(ports) == len(patterns), f"the server did not say its ports: {ports}"
        server = Server(process, ports)
        _children[process.pid] = server.children
        yield server
    finally:
        for child in [*server_children(process), process]:
            child.terminate()
            try:
                child.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if log_file is not None:
            log_file.close()


#: The canary, in a process of its own (so that the attacker in this process does not
#: slow it down): writes one key over TCP every 5 ms. Each line on stdin ends a window:
#: once the window holds at least 100 writes it prints their count, p50 and p99 latency
#: in seconds and starts the next; on end of file it stops.
CANARY_CODE = """
import asyncio, sys, time
from statehub import AsyncClient

async def main(port):
    loop = asyncio.get_running_loop()
    asked = asyncio.Queue()
    def read_stdin():
        asked.put_nowait(sys.stdin.readline())
    loop.add_reader(sys.stdin.fileno(), read_stdin)
    latencies = []
    async with AsyncClient(f"statehub+tcp://127.0.0.1:{port}") as client:
        await client.set("canary", -1)
        print("ready", flush=True)
        for count in range(10_000_000):
            if not asked.empty() and len(latencies) >= 100:
                if not asked.get_nowait():
                    break
                latencies.sort()
                p50, p99 = (latencies[int(q * (len(latencies) - 1))] for q in (0.5, 0.99))
                print(len(latencies), p50, p99, flush=True)
                latencies = []
            started = time.perf_counter()
            await client.set("canary", count)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

asyncio.run(main(int(sys.argv[1])))
"""


_children: dict[int, list[subprocess.Popen[str]]] = {}


def server_children(process: subprocess.Popen[str]) -> list[subprocess.Popen[str]]:
    return _children.pop(process.pid, [])


@dataclass(frozen=True)
class Latencies:
    """The canary's write latencies over one window, in seconds."""

    count: int
    p50: float
    p99: float

    def __str__(self) -> str:
        return f"p50 {self.p50 * 1000:.0f} ms, p99 {self.p99 * 1000:.0f} ms ({self.count} writes)"


class Canary:
    """A session-protocol client in a child process, timing its writes.

    The attacks are judged against what the same canary measures on the same server just
    before the attack (``baseline``): the machine is shared (2 cores, three test suites
    side by side, load 6 to 13), so its load alone moves the canary's p99 from 10 ms to
    well over 100 ms, while what the issue asks is that one client does not slow the
    others down. The bound is on what the attack adds: p99 during the attack minus p99
    before, under ``ATTACK_ADDS_AT_MOST`` (issue 24's 100 ms)."""

    def __init__(self, server: Server) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CANARY_CODE, str(server.tcp_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        server.children.append(self.process)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == "ready\n", f"the canary did not start: {line!r}"
        self.baseline: Latencies | None = None

    async def window(self) -> Latencies:
        """End the current window (once it holds 100 writes): its latencies."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("window\n")
        self.process.stdin.flush()
        line = await asyncio.to_thread(self.process.stdout.readline)
        count, p50, p99 = line.split()
        return Latencies(int(count), float(p50), float(p99))

    async def stop(self, may_add: float = ATTACK_ADDS_AT_MOST) -> Latencies:
        """End the attack's window and stop writing: the attack's latencies, checked
        against the baseline (printed, for the figures in docs/security.md): the attack
        may add ``may_add`` seconds to the p99."""
        assert self.baseline is not None, "no baseline: start it with canary_started"
        during = await self.window()
        assert self.process.stdin is not None
        self.process.stdin.close()
        print(f"canary before the attack: {self.baseline}; during: {during}")
        added = during.p99 - self.baseline.p99
        assert added < may_add, (
            f"the attack added {added * 1000:.0f} ms to the canary's p99 write latency "
            f"(before: {self.baseline}; during: {during})"
        )
        return during

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


async def canary_started(server: Server) -> Canary:
    """A canary writing to ``server``, its baseline measured (the attack starts next)."""
    canary = await asyncio.to_thread(Canary, server)
    canary.baseline = await canary.window()
    return canary


@contextlib.asynccontextmanager
async def looking(server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"statehub+tcp://127.0.0.1:{server.tcp_port}") as client:
        yield client


async def reclaimed(server: Server, rss_before: int) -> None:
    """Wait until the server is back within ``MEMORY_GROWTH`` of ``rss_before``."""
    await eventually(
        lambda: server.rss() - rss_before < MEMORY_GROWTH,
        f"the server back within {MEMORY_GROWTH / MIB:.0f} MiB of its size before the attack",
        timeout=10.0,
        interval=0.05,
    )


async def _until_answered(
    socket: aiohttp.ClientWebSocketResponse, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Read NanoVer messages until ``done`` says one is the last wanted; all of them."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE):
        while True:
            message = await socket.receive()
            assert message.type is aiohttp.WSMsgType.BINARY, message
            decoded = msgpack.unpackb(message.data, strict_map_key=False)
            seen.append(decoded)
            if done(decoded):
                return seen


async def _command_names(client: AsyncClient) -> set[str]:
    return set(await client.available_commands())


async def test_80000_registrations_in_one_message_neither_freeze_nor_pile_up() -> None:
    """Issue 24 item 3: registering was quadratic (a copy of the command table each)."""
    with serving() as server:
        async with looking(server) as observer, aiohttp.ClientSession() as http:
            registrations = [{"register": {"name": f"cmd/{n}"}} for n in range(1_000)]
            # packed before the canary starts: packing blocks this process's loop too
            huge = msgpack.packb(
                {"command": [{"register": {"name": f"x/{n}"}} for n in range(80_000)]}
            )
            rss_before = server.rss()
            writer = await canary_started(server)
            async with http.ws_connect(server.nanover_url, max_msg_size=0) as socket:
                await socket.send_bytes(msgpack.packb({"command": registrations}))
                await socket.send_bytes(huge)
                await socket.send_bytes(msgpack.packb({"command": {"register": {"name": "one"}}}))
                seen = await _until_answered(
                    socket, lambda m: "error" in m and "'one'" in m["error"]["message"]
                )
                errors = [m for m in seen if "error" in m]
                kinds = [m["error"]["type"] for m in errors]
                # the 80,000 are refused whole; the 1,001st single one by the per-client bound
                assert kinds == ["LimitExceededError", "LimitExceededError"], errors
                assert "80000 command payloads" in errors[0]["error"]["message"]
                assert "max_registrations=1000" in errors[1]["error"]["message"]
                assert len(await _command_names(observer) & {"cmd/0", "cmd/999"}) == 2
            await writer.stop()
            assert server.rss() - rss_before < MEMORY_GROWTH
            # the client left: its registrations left with it
            for _ in range(1_000):
                names = await _command_names(observer)
                if not any(name.startswith("cmd/") for name in names):
                    break
                await asyncio.sleep(0.05)
            assert not any(name.startswith("cmd/") for name in names)


async def test_100000_command_requests_run_at_most_max_pending_requests_at_once() -> None:
    """Issue 24 item 4: one message per 1,000 requests, 100,000 in all, to a command that
    never answers; the rest are refused at once, and nothing stays after the client left."""
    with serving() as server:
        async with (
            looking(server) as observer,
            aiohttp.ClientSession() as http,
            http.ws_connect(server.nanover_url, max_msg_size=0) as registrant,
        ):
            await registrant.send_bytes(msgpack.packb({"command": {"register": {"name": "hang"}}}))
            for _ in range(200):
                if "hang" in await _command_names(observer):
                    break
                await asyncio.sleep(0.05)
            request = [
                {"request": {"name": "hang", "arguments": {}, "id": n}} for n in range(1_000)
            ]
            forwards: asyncio.Queue[None] = asyncio.Queue()

            async def serve_registrant() -> None:
                """Read what the registrant is asked as it comes (it answers nothing): a
                client that did not read would be dropped, its command with it."""
                async for message in registrant:
                    if "command" in msgpack.unpackb(message.data):
                        forwards.put_nowait(None)

            serving_registrant = asyncio.ensure_future(serve_registrant())
            rss_before = server.rss()
            # The attacker costs as little as an attacker would: its 100 messages built
            # beforehand, its 99,000 replies counted in the bytes, not decoded, so that
            # what the canary sees is the server's doing (a decoding client took one of
            # the two cores from the server and the canary).
            attacker = RawWebSocket(server.http_port, "/", receive_buffer=None)
            messages = [attacker.frame({"command": request}) for _ in range(100)]
            writer = await canary_started(server)
            try:
                refused = await asyncio.to_thread(
                    attacker.send_and_count, messages, REFUSAL, 99_000
                )
                grown = server.rss() - rss_before
            finally:
                attacker.close()
            assert refused == 99_000
            await writer.stop()
            # the registrant was asked exactly 1,000 times: the others never started
            async with asyncio.timeout(DEADLINE):
                for _ in range(1_000):
                    await forwards.get()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):  # bounded: no 1,001st arrives
                    await forwards.get()
            serving_registrant.cancel()
            assert grown < MEMORY_GROWTH, f"the server grew by {grown / MIB:.0f} MiB"
            # the attacker left: its 1,000 waiting forwards ended; a new client is served
            async with http.ws_connect(server.nanover_url, max_msg_size=0) as late:
                await late.send_bytes(
                    msgpack.packb({"command": {"request": {"name": "commands/list", "id": 1}}})
                )
                seen = await _until_answered(late, lambda m: "command" in m)
                assert "response" in seen[-1]["command"]
            await reclaimed(server, rss_before)


#: What each refusal of a command request over the limit says (web/nanover_socket.py).
REFUSAL = b"LimitExceededError: this client already has"


class RawWebSocket:
    """A WebSocket client on a plain socket: it reads nothing after the handshake (with a
    4 KiB receive buffer, unless told otherwise) or only counts what it is sent."""

    def __init__(self, port: int, path: str, *, receive_buffer: int | None = 4096) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = b""
        while b"\r\n\r\n" not in response and len(response) < 10_000:
            chunk = self.sock.recv(1)  # byte by byte: not one byte of a frame is read
            assert chunk, "the server closed during the handshake"
            response += chunk
        assert response.startswith(b"HTTP/1.1 101"), response

    def send(self, message: Any) -> None:
        self.sock.sendall(self.frame(message))

    @staticmethod
    def frame(message: Any) -> bytes:
        """``message`` packed as a masked binary frame, as a client sends it."""
        payload = msgpack.packb(message)
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = bytes([0x82, 0x80 | length])
        elif length < 65536:
            header = bytes([0x82, 0x80 | 126]) + length.to_bytes(2, "big")
        else:
            header = bytes([0x82, 0x80 | 127]) + length.to_bytes(8, "big")
        repeated = (mask * (length // 4 + 1))[:length]
        masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
        return header + mask + masked.to_bytes(length, "big")

    def send_and_count(self, frames: list[bytes], marker: bytes, wanted: int) -> int:
        """Send ``frames`` (from a thread of its own: the server answers as it reads) and
        count ``marker`` in what comes back until ``wanted`` are seen; how many were."""
        sender = threading.Thread(target=lambda: self.sock.sendall(b"".join(frames)))
        sender.start()
        seen, tail = 0, b""
        deadline = time.monotonic() + DEADLINE
        try:
            while seen < wanted and time.monotonic() < deadline:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                data = tail + chunk
                seen += data.count(marker)
                # a marker cut by the chunk's end is counted with the next one (the tail
                # is too short to hold a whole one, counted already)
                tail = data[-(len(marker) - 1) :]
        finally:
            sender.join(DEADLINE)
        return seen

    def close(self) -> None:
        self.sock.close()


async def test_websocket_clients_that_do_not_read_are_dropped_and_release_what_they_held() -> None:
    """Issue 24 item 6: 8 NanoVer clients and one /v1/session client on a 20 MiB state
    read nothing; each is dropped within the unread bound (1.5 x --keepalive: 3 s here),
    its avatar keys, lock and memory released."""
    with serving("--keepalive", "2") as server:
        async with looking(server) as observer:
            for n in range(8):
                await observer.set(f"big.{n}", "x" * 2_500_000)
            rss_before = server.rss()
            writer = await canary_started(server)
            started = time.monotonic()
            clients = []
            for n in range(8):
                client = RawWebSocket(server.http_port, "/")
                client.send({"state": {"updates": {f"avatar.u{n}": n}, "removals": []}})
                clients.append(client)
            session = RawWebSocket(server.http_port, "/v1/session")
            session.send([{"id": 1, "op": "hello", "client": "unread"}])
            session.send([{"id": 2, "op": "lock", "key": "held", "exclusive": True}])
            session.send([{"id": 3, "op": "subscribe", "interval": 0, "prefix": ""}])
            clients.append(session)
            try:
                for _ in range(200):  # the writes arrived: the keys and the lock are held
                    keys = set(await observer.keys("avatar."))
                    held = not await observer.test_lock("held")
                    if len(keys) == 8 and held:
                        break
                    await asyncio.sleep(0.05)
                assert len(keys) == 8 and held, (keys, held)
                # Joining cost what a 20 MiB state costs every new client (a copy packed
                # and written for each: 0.1-0.4 s at p99 for these 9 here), attack or
                # not; what is judged is what not reading adds, from here on.
                await writer.window()
                for _ in range(400):  # then dropped: the keys and the lock released
                    keys = set(await observer.keys("avatar."))
                    held = not await observer.test_lock("held")
                    if not keys and not held:
                        break
                    await asyncio.sleep(0.05)
                dropped_after = time.monotonic() - started
                assert not keys and not held, f"after {dropped_after:.0f} s: {keys}, {held}"
                # the bound is 3 s; loose, for a loaded machine
                assert dropped_after < 15, f"dropped only after {dropped_after:.1f} s"
                await writer.stop()
            finally:
                for client in clients:
                    client.close()
            await reclaimed(server, rss_before)  # what they held is freed


async def test_a_nanover_client_writing_state_as_fast_as_it_can_gets_a_fair_share() -> None:
    """Issue 24 item 5: one message per loop turn, each committed before the next is read:
    the writer is paced by the server, and other clients' writes go on between its own."""
    with serving() as server:
        async with (
            looking(server) as observer,
            aiohttp.ClientSession() as http,
            http.ws_connect(server.nanover_url, max_msg_size=0) as attacker,
        ):
            messages = [
                msgpack.packb({"state": {"updates": {"avatar.flood": n, "flood": n}}})
                for n in range(1_000)
            ]

            async def discard() -> None:
                async for _ in attacker:
                    pass

            reader = asyncio.ensure_future(discard())
            rss_before = server.rss()
            writer = await canary_started(server)
            sent = 0
            until = time.monotonic() + 3.0
            while time.monotonic() < until and sent < 2_000_000:
                await attacker.send_bytes(messages[sent % len(messages)])
                sent += 1
            await writer.stop()
            grown = server.rss() - rss_before
            reader.cancel()
            await attacker.close()
            assert sent > 1_000, f"the attacker sent only {sent} messages"
            assert grown < MEMORY_GROWTH, f"the server grew by {grown / MIB:.0f} MiB"
            for _ in range(200):  # the attacker left: its user's keys left with it
                if not await observer.keys("avatar."):
                    break
                await asyncio.sleep(0.05)
            assert not await observer.keys("avatar.")


def _at_most_1024_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


async def test_1100_idle_sockets_under_ulimit_1024_neither_lock_out_clients_nor_flood_the_log(
    tmp_path: Path,
) -> None:
    """Issue 24 item 7: 550 idle sockets on each of the web and TCP ports of a server
    limited to 1,024 file descriptors. Those over the connection bound (1,024 - 128) are
    refused at once; the others are closed after the handshake timeout (10 s), so a new
    client gets in; the log stays small at the level an operator runs (without ``-v``,
    which adds two debug lines per connection: about 150 bytes each, here 1,100 times)."""
    log = tmp_path / "serve.log"
    with serving(preexec_fn=_at_most_1024_descriptors, log=log) as server:
        async with looking(server) as observer:
            rss_before = server.rss()
            writer = await canary_started(server)
            idle: list[socket.socket] = []
            try:
                for n in range(1_100):
                    port = server.tcp_port if n % 2 else server.http_port
                    idle.append(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE))
                    if n % 2 == 0:
                        idle[-1].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a head
                started = time.monotonic()
                # a new client gets in within the handshake timeout (and a margin)
                for _ in range(600):
                    try:
                        async with asyncio.timeout(5):
                            async with AsyncClient(
                                f"statehub+tcp://127.0.0.1:{server.tcp_port}"
                            ) as late:
                                await late.set("late", 1)
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
                waited = time.monotonic() - started
                assert await observer.get("late") == 1
                assert waited < 30, f"a new client got in only after {waited:.0f} s"
                # the idle ones were closed: each reads end of file (or a reset)
                closed = 0
                for sock in idle:
                    sock.settimeout(DEADLINE)
                    try:
                        while sock.recv(65536):
                            pass
                        closed += 1
                    except OSError:
                        closed += 1
                assert closed == len(idle)
                await writer.stop()
            finally:
                for sock in idle:
                    sock.close()
            assert server.rss() - rss_before < MEMORY_GROWTH
            # a new web client too, once they are gone
            url = f"http://127.0.0.1:{server.http_port}/healthz"
            async with aiohttp.ClientSession() as http, http.get(url) as reply:
                assert reply.status == 200
    size = log.stat().st_size
    assert size < 20_000, f"the server wrote {size} bytes of log"


class _Loop:
    def __init__(self) -> None:
        self.logged: list[str] = []

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.logged.append(context["message"])


def test_event_loop_errors_of_one_kind_are_logged_at_most_once_per_interval() -> None:
    """asyncio reports each failed accept(); the handler keeps one line per kind per
    interval and says how many it left out."""
    loop = _Loop()
    handler = RateLimitedLoopErrors(interval=3600)
    error = OSError(24, "Too many open files")
    accept = {"message": "socket.accept() out of system resource", "exception": error}
    for _ in range(10_000):
        handler(loop, accept)  # type: ignore[arg-type]
    handler(loop, {"message": "another kind"})  # type: ignore[arg-type]
    assert loop.logged == ["socket.accept() out of system resource", "another kind"]
    handler.interval = 0
    handler(loop, accept)  # type: ignore[arg-type]
    assert "9999 more" in loop.logged[-1], loop.logged


class _Connecting:
    """A connection in a port's ``HandshakeDeadlines``: notes when it was closed."""

    def __init__(self, name: str, closed: list[tuple[str, float]]) -> None:
        self.name, self._closed = name, closed

    def handshake_expired(self) -> None:
        self._closed.append((self.name, asyncio.get_running_loop().time()))


async def test_one_timer_closes_each_connection_with_no_first_request_in_time() -> None:
    """A port's handshake deadlines: a connection that sent its first request is never
    closed for it, the others are closed in turn, each once its own timeout has passed."""
    loop = asyncio.get_running_loop()
    closed: list[tuple[str, float]] = []
    deadlines = HandshakeDeadlines(timeout=0.2)
    first, answered, later = (_Connecting(name, closed) for name in ("first", "answered", "later"))
    started = loop.time()
    deadlines.start(first)
    deadlines.start(answered)
    deadlines.done(answered)
    await asyncio.sleep(0.1)  # a later connection, with a later deadline
    later_started = loop.time()
    deadlines.start(later)
    await eventually(lambda: len(closed) == 2)
    assert [name for name, _ in closed] == ["first", "later"]
    assert closed[0][1] >= started + 0.2
    assert closed[1][1] >= later_started + 0.2
    deadlines.start(answered)  # the timer is armed again for a new connection
    await eventually(lambda: len(closed) == 3)
    assert closed[2][0] == "answered"


async def test_a_nanover_client_with_more_than_max_queued_bytes_unread_is_dropped() -> None:
    """Issue 24 item 6: bounded send queues. A NanoVer client registers a command and
    reads nothing; 10 calls of it with 2.5 MB arguments each are forwarded to it: once
    more than max_queued_bytes (16 MiB) would wait behind the one being written, it is
    dropped, long before the 15 s unread bound, and its command goes with it."""
    with serving() as server:
        async with looking(server) as observer:
            rss_before = server.rss()
            writer = await canary_started(server)
            client = RawWebSocket(server.http_port, "/")
            calls: list[asyncio.Task[Any]] = []
            try:
                client.send({"command": {"register": {"name": "sink"}}})
                for _ in range(200):
                    if "sink" in await _command_names(observer):
                        break
                    await asyncio.sleep(0.05)
                started = time.monotonic()
                calls = [
                    asyncio.ensure_future(observer.run_command("sink", blob="x" * 2_500_000))
                    for _ in range(10)
                ]
                for _ in range(400):  # dropped: its command is gone
                    if "sink" not in await _command_names(observer):
                        break
                    await asyncio.sleep(0.05)
                dropped_after = time.monotonic() - started
                assert "sink" not in await _command_names(observer), "never dropped"
                assert dropped_after < 10, f"dropped only after {dropped_after:.1f} s"
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
                assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
                await writer.stop()
            finally:
                for call in calls:
                    call.cancel()
                client.close()
            await reclaimed(server, rss_before)
