"""Fan-out side by side with Redis: the workloads of issue 11, in interleaved rounds.

Three processes per measurement, as the issue defines them: this process is the one
client (the writer), the server runs in a child process (``statehub serve``, or
``redis-server``), and every subscriber lives in one more child process. Each workload
runs once per round on every target in turn (statehub over gRPC, statehub over plain
TCP, Redis), and the table shows the median of the rounds with its ratio to Redis.

Clients speak the session protocol raw (``encode_batch`` frames over a bare grpc.aio
stream, or over ``client.tcp_stream``), and Redis clients are redis-py with hiredis for
the writer and a bare socket + hiredis parser for subscribers: each side's client does
the least work its protocol allows, so the figures are the servers', not a client
library's. What each workload sends to Redis is written next to it below.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any, Protocol

import grpc
import grpc.aio
import msgpack

from statehub.bench.network import _raise_file_limit as raise_file_limit
from statehub.bench.table import Result, machine
from statehub.client.tcp_stream import TcpFrames
from statehub.protocol import SESSION_PATH, decode_batch, encode_batch

PIPELINE = 64  # writes in flight from the one client
KEYS = 100
THROUGHPUT_SECONDS = 2.0
LATENCY_SECONDS = 3.0
LATENCY_SUBSCRIBERS = 10
DURABLE_WRITERS = 16
DURABLE_SECONDS = 2.0
FANOUT_WRITES = 3  # writes timed to all subscribers; the median is kept
#: Seconds any one wait (connecting, a write reaching everyone) may take before failing.
PATIENCE = 300.0
#: Redis channel carrying every change: "key=value".
CHANNEL = b"state"

TARGETS = ("grpc", "tcp", "redis")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- servers -------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for process {self.process.pid}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


#: The statehub server in a child process, serving gRPC and (in the same process, on the
#: same hub) the plain-TCP prototype until the lead wires it into ``statehub serve``.
_STATEHUB = [sys.executable, "-c", "from statehub.bench.fanout import serve; serve()"]


@contextmanager
def statehub_server(transport: str, data: str | None = None) -> Iterator[Server]:
    process = subprocess.Popen(
        [*_STATEHUB, data or ""], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.fullmatch(r"grpc (\d+) tcp (\d+)\n", line)
    if found is None:
        process.kill()
        process.wait()
        raise RuntimeError(f"the statehub server did not start: {line!r}")
    server = Server(process, int(found.group(1 if transport == "grpc" else 2)))
    try:
        yield server
    finally:
        server.stop()


def serve() -> None:
    """Entry of the server process: a StateServer, its gRPC and plain-TCP ports."""
    from statehub.serving.state_server import StateServer
    from statehub.store.sqlite import SQLiteStore
    from statehub.store.state_dictionary import StateDictionary

    raise_file_limit()
    data = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None
    store = SQLiteStore(data, durability="disk") if data else None
    state = StateDictionary(store=store) if store is not None else None

    async def main() -> None:
        server = StateServer(state=state, address="127.0.0.1", port=0)
        await server.start()
        print(f"grpc {server.grpc_port} tcp {server.tcp_port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop()

    try:
        asyncio.run(main())
    finally:
        if store is not None:
            store.close()


def redis_path() -> str | None:
    return shutil.which("redis-server")


@contextmanager
def redis_server(durable: bool = False) -> Iterator[Server]:
    executable = redis_path()
    if executable is None:
        raise RuntimeError("redis-server is not on PATH")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="statehub-bench-redis-") as directory:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if durable else []
        arguments = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        arguments += ["--appendonly", "no", *durability, "--dir", directory]
        # Slow subscribers are buffered, never disconnected (as statehub does).
        arguments += ["--client-output-buffer-limit", "pubsub 0 0 0", "--maxclients", "20000"]
        process = subprocess.Popen(
            [executable, *arguments],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        server = Server(process, port)
        try:
            _wait_for_port(port, process)
            yield server
        finally:
            server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not listen on port {port} within 30 s")


# -- statehub's raw session clients --------------------------------------------------------


class Frames(Protocol):
    async def write(self, frame: bytes) -> None: ...
    async def read(self) -> bytes | None: ...
    async def close(self) -> None: ...


class GrpcFrames:
    """A bare ``/statehub.v1.Hub/Session`` stream on its own channel (own TCP connection)."""

    def __init__(self, port: int) -> None:
        self._channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._call: Any = self._channel.stream_stream(SESSION_PATH)()

    async def write(self, frame: bytes) -> None:
        await self._call.write(frame)

    async def read(self) -> bytes | None:
        frame = await self._call.read()
        return None if frame is grpc.aio.EOF else frame

    async def close(self) -> None:
        self._call.cancel()
        await self._channel.close()


async def open_frames(transport: str, port: int) -> Frames:
    if transport == "tcp":
        return await TcpFrames.open("127.0.0.1", port)
    return GrpcFrames(port)


class RawSession:
    """A session whose requests are answered in order (no lock, no call, no subscription)."""

    def __init__(self, frames: Frames) -> None:
        self.frames = frames
        self._next_id = 1

    @classmethod
    async def open(cls, transport: str, port: int) -> RawSession:
        session = cls(await open_frames(transport, port))
        await session.requests([{"op": "hello", "token": None, "client": "bench"}])
        return session

    async def requests(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``messages`` in one frame and return their replies."""
        for message in messages:
            message["id"] = self._next_id
            self._next_id += 1
        await self.frames.write(encode_batch(messages))
        replies: list[dict[str, Any]] = []
        while len(replies) < len(messages):
            frame = await self.frames.read()
            if frame is None:
                raise RuntimeError("the server ended the session")
            replies += [message for message in decode_batch(frame) if "id" in message]
        for reply in replies:
            if "error" in reply:
                raise RuntimeError(f"the server refused a request: {reply['error']}")
        return replies


def _updates(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"op": "update", "updates": {f"key{i % KEYS}": i}, "removals": []}
        for i in range(first, first + count)
    ]


# -- the writer's side of each workload, per target -----------------------------------------


class Writer(Protocol):
    async def pipelined(self, seconds: float) -> float:
        """Writes/s with PIPELINE writes in flight (one batch of PIPELINE at a time)."""

    async def one_at_a_time(self, seconds: float) -> float: ...

    async def stamp(self, key: str, value: float) -> None:
        """One acknowledged write of ``value``, visible to subscribers."""

    async def close(self) -> None: ...


class StatehubWriter:
    def __init__(self, session: RawSession) -> None:
        self.session = session

    @classmethod
    async def open(cls, transport: str, port: int) -> StatehubWriter:
        return cls(await RawSession.open(transport, port))

    async def pipelined(self, seconds: float) -> float:
        return await _timed(
            seconds, PIPELINE, lambda n: self.session.requests(_updates(n, PIPELINE))
        )

    async def one_at_a_time(self, seconds: float) -> float:
        return await _timed(seconds, 1, lambda n: self.session.requests(_updates(n, 1)))

    async def stamp(self, key: str, value: float) -> None:
        await self.session.requests([{"op": "update", "updates": {key: value}, "removals": []}])

    async def close(self) -> None:
        await self.session.frames.close()


class RedisWriter:
    """redis-py (hiredis parser). With subscribers each write is SET + PUBLISH, pipelined."""

    def __init__(self, port: int, publish: bool) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis(port=port)
        self.publish = publish

    async def _batch(self, first: int, count: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i in range(first, first + count):
            key = f"key{i % KEYS}"
            pipe.set(key, i)
            if self.publish:
                pipe.publish(CHANNEL, f"{key}={i}")
        await pipe.execute()

    async def pipelined(self, seconds: float) -> float:
        return await _timed(seconds, PIPELINE, lambda n: self._batch(n, PIPELINE))

    async def one_at_a_time(self, seconds: float) -> float:
        if self.publish:
            return await _timed(seconds, 1, lambda n: self._batch(n, 1))
        return await _timed(seconds, 1, lambda n: self.client.set(f"key{n % KEYS}", n))

    async def stamp(self, key: str, value: float) -> None:
        await self._stamp(key, repr(value))

    async def _stamp(self, key: str, text: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, text)
        pipe.publish(CHANNEL, f"{key}={text}")
        await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


async def open_writer(target: str, port: int, publish: bool = False) -> Writer:
    if target == "redis":
        return RedisWriter(port, publish)
    return await StatehubWriter.open(target, port)


async def _timed(seconds: float, per_step: int, step: Callable[[int], Any]) -> float:
    """Run ``step`` (each does ``per_step`` writes) for ``seconds``; writes per second."""
    for n in range(0, 5 * per_step, per_step):  # warm up
        await step(n)
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        await step(done)
        done += per_step
    return done / (time.perf_counter() - started)


# -- subscribers, in their own process ------------------------------------------------------


class Subscribers:
    """``count`` subscribers to everything (interval 0) in a child process."""

    def __init__(self, target: str, port: int, count: int) -> None:
        self._args = (target, port, count)
        self.count = count
        self._pipe: Pipe | None = None
        self._process: Any = None

    async def __aenter__(self) -> Subscribers:
        if not self.count:
            return self
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_subscriber_process, args=(*self._args, child), daemon=True
        )
        self._process.start()
        await self.ask(None)
        return self

    async def ask(self, command: tuple[Any, ...] | None) -> Any:
        """Send ``command`` (None: just wait) and return the child's answer."""
        assert self._pipe is not None
        if command is not None:
            self._pipe.send(command)
        reply = await asyncio.get_running_loop().run_in_executor(None, self._receive)
        if reply[0] == "error":
            raise RuntimeError(f"subscriber process: {reply[1]}")
        return reply[1]

    def _receive(self) -> Any:
        assert self._pipe is not None
        deadline = time.monotonic() + PATIENCE
        while not self._pipe.poll(0.2):
            if not self._process.is_alive():
                raise RuntimeError(f"the subscriber process exited ({self._process.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the subscriber process did not answer in {PATIENCE} s")
        return self._pipe.recv()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pipe is None:
            return
        self._pipe.send(("stop",))
        await asyncio.get_running_loop().run_in_executor(None, self._process.join, 60)
        if self._process.is_alive():
            self._process.kill()
        self._pipe.close()


@dataclass
class Received:
    """What the subscribers saw: deliveries, latency samples, and arrivals per stamp."""

    deliveries: int = 0
    latencies: list[float] = field(default_factory=list)
    arrivals: dict[float, list[float]] = field(default_factory=dict)  # stamp -> [count, last]

    def saw(self, key: str, value: Any, now: float) -> None:
        self.deliveries += 1
        if key == "latency":
            self.latencies.append(now - float(value))
        elif key == "fanout":
            arrival = self.arrivals.setdefault(float(value), [0, 0.0])
            arrival[0] += 1
            arrival[1] = max(arrival[1], now)


def _subscriber_process(target: str, port: int, count: int, pipe: Pipe) -> None:
    raise_file_limit()
    try:
        asyncio.run(_subscribers(target, port, count, pipe))
    except Exception as error:
        pipe.send(("error", f"{type(error).__name__}: {error}"))


async def _subscribers(target: str, port: int, count: int, pipe: Pipe) -> None:
    received = Received()
    gate = asyncio.Semaphore(200)  # connections being opened at once
    ready = [0]
    all_ready = asyncio.Event()

    def one_ready() -> None:
        ready[0] += 1
        if ready[0] == count:
            all_ready.set()

    watch = _watch_redis if target == "redis" else _watch_statehub
    tasks = [
        asyncio.create_task(watch(target, port, gate, one_ready, received)) for _ in range(count)
    ]
    waiting = asyncio.create_task(all_ready.wait())
    await asyncio.wait([waiting, *tasks], timeout=PATIENCE, return_when=asyncio.FIRST_COMPLETED)
    if not all_ready.is_set():
        failed = [task for task in tasks if task.done()]
        if failed:
            failed[0].result()
        raise RuntimeError(f"only {ready[0]} of {count} subscribers connected in {PATIENCE} s")
    pipe.send(("ok", None))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "reset":
            received.deliveries = 0
            received.latencies.clear()
            pipe.send(("ok", None))
        elif command[0] == "stats":
            await asyncio.sleep(command[1])  # let deliveries in flight arrive
            pipe.send(("ok", (received.deliveries, list(received.latencies))))
        elif command[0] == "reached":
            pipe.send(("ok", await _reached(received, command[1], count)))
        else:
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _reached(received: Received, stamp: float, count: int) -> float:
    """Seconds from ``stamp`` until the last of ``count`` subscribers had it."""
    deadline = time.monotonic() + PATIENCE
    while received.arrivals.get(stamp, [0])[0] < count:
        if time.monotonic() > deadline:
            got = received.arrivals.get(stamp, [0])[0]
            raise RuntimeError(f"{got} of {count} subscribers got the write in {PATIENCE} s")
        await asyncio.sleep(0.005)
    return received.arrivals[stamp][1] - stamp


async def _watch_statehub(
    transport: str, port: int, gate: asyncio.Semaphore, ready: Callable[[], None], got: Received
) -> None:
    async with gate:
        session = await RawSession.open(transport, port)
        frames = session.frames
        await session.requests([{"op": "subscribe", "interval": 0.0, "prefix": "", "since": None}])
    ready()
    try:
        while (frame := await frames.read()) is not None:
            now = time.monotonic()
            for message in msgpack.unpackb(frame):
                if "ping" in message:  # the server's heartbeat (plain TCP): answer, or be dropped
                    await frames.write(encode_batch([{"pong": message["ping"]}]))
                    continue
                if message.get("snapshot"):
                    continue  # the state as it was: not a write made while watching
                for key, value in message["updates"].items():
                    got.saw(key, value, now)
    finally:
        await frames.close()


async def _watch_redis(
    _: str, port: int, gate: asyncio.Semaphore, ready: Callable[[], None], got: Received
) -> None:
    import hiredis

    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL))
        parser = hiredis.Reader()
        while parser.gets() is False:  # until the subscription is confirmed
            parser.feed(await reader.read(65536))
    ready()
    try:
        while chunk := await reader.read(1 << 20):
            now = time.monotonic()
            parser.feed(chunk)
            while (message := parser.gets()) is not False:
                key, _, value = message[2].partition(b"=")
                got.saw(key.decode(), value, now)
    finally:
        writer.close()


# -- the workloads -------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    unit: str
    higher_is_better: bool
    #: target -> figures, one per round
    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, target: str, figure: float) -> None:
        self.figures.setdefault(target, []).append(figure)


class Bench:
    def __init__(self, targets: tuple[str, ...], rounds: int, fanout_counts: tuple[int, ...]):
        self.targets = targets
        self.rounds = rounds
        self.fanout_counts = fanout_counts
        self.rows: dict[str, Row] = {}

    def row(self, workload: str, unit: str, higher_is_better: bool = True) -> Row:
        if workload not in self.rows:
            self.rows[workload] = Row(workload, unit, higher_is_better)
        return self.rows[workload]

    @contextmanager
    def server(self, target: str, durable: bool = False) -> Iterator[Server]:
        if target == "redis":
            with redis_server(durable) as server:
                yield server
        elif durable:
            with (
                tempfile.TemporaryDirectory(prefix="statehub-bench-") as data,
                statehub_server(target, data) as server,
            ):
                yield server
        else:
            with statehub_server(target) as server:
                yield server

    async def run(self) -> None:
        for round_number in range(1, self.rounds + 1):
            for target in self.targets:
                log(f"round {round_number}/{self.rounds}: {target} (load {_load()})")
                await self._round(target)

    async def _round(self, target: str) -> None:
        chosen = WORKLOADS
        if {"writes", "subscribers", "latency"} & set(chosen):
            with self.server(target) as server:
                if "writes" in chosen:
                    await self._attempt(target, "writes", self._writes(target, server.port))
                for subscribers in (10, 100) if "subscribers" in chosen else ():
                    work = self._writes_with_subscribers(target, server.port, subscribers)
                    await self._attempt(target, f"writes, {subscribers} subscribers", work)
                for rate in (200, 2000) if "latency" in chosen else ():
                    await self._attempt(
                        target, f"latency {rate}/s", self._latency(target, server.port, rate)
                    )
        for count in self.fanout_counts if "fanout" in chosen else ():
            with self.server(target) as server:
                work = self._idle_and_fanout(target, server, count)
                await self._attempt(target, f"{count} idle subscribers", work)
        if "durable" in chosen:
            with self.server(target, durable=True) as server:
                await self._attempt(target, "durable", self._durable(target, server.port))

    async def _attempt(self, target: str, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run one workload; a failure is logged and leaves its row without this figure."""
        try:
            await work
        except Exception as error:
            log(f"  {target}: {name} failed: {type(error).__name__}: {error}")

    async def _writes(self, target: str, port: int) -> None:
        writer = await open_writer(target, port)
        try:
            self.row(f"acked 1-key writes/s, one client, {PIPELINE} in flight", "writes/s").add(
                target, await writer.pipelined(THROUGHPUT_SECONDS)
            )
            self.row("acked 1-key writes/s, one client, one outstanding", "writes/s").add(
                target, await writer.one_at_a_time(THROUGHPUT_SECONDS)
            )
        finally:
            await writer.close()

    async def _writes_with_subscribers(self, target: str, port: int, subscribers: int) -> None:
        async with Subscribers(target, port, subscribers):
            writer = await open_writer(target, port, publish=True)
            try:
                figure = await writer.pipelined(THROUGHPUT_SECONDS)
            finally:
                await writer.close()
        workload = f"writes/s, {PIPELINE} in flight, {subscribers} subscribers at interval 0"
        self.row(workload, "writes/s").add(target, figure)

    async def _latency(self, target: str, port: int, rate: int) -> None:
        async with Subscribers(target, port, LATENCY_SUBSCRIBERS) as watching:
            writer = await open_writer(target, port, publish=True)
            try:
                await watching.ask(("reset",))
                period = 1 / rate
                started = time.monotonic()
                for i in range(int(rate * LATENCY_SECONDS)):
                    delay = started + i * period - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await writer.stamp("latency", time.monotonic())
            finally:
                await writer.close()
            _, latencies = await watching.ask(("stats", 0.5))
        samples = sorted(latencies)
        where = f"{rate:,} writes/s, {LATENCY_SUBSCRIBERS} subscribers at interval 0"
        expected = int(rate * LATENCY_SECONDS) * LATENCY_SUBSCRIBERS
        if len(samples) < expected:
            log(f"  {target}: only {len(samples):,}/{expected:,} deliveries at {rate}/s")
        for q in (0.5, 0.99):
            figure = samples[min(len(samples) - 1, round(q * (len(samples) - 1)))] * 1000
            name = f"write-to-subscriber p{round(q * 100)}, {where}"
            self.row(name, "ms", higher_is_better=False).add(target, figure)

    async def _idle_and_fanout(self, target: str, server: Server, count: int) -> None:
        writer = await open_writer(target, server.port, publish=True)
        try:
            await writer.stamp("fanout", 0.0)  # the key exists before subscribers come
            before = server.rss_kib()
            async with Subscribers(target, server.port, count) as watching:
                await asyncio.sleep(1.0)  # let the server settle after the connection storm
                after = server.rss_kib()
                self.row(
                    f"server memory per idle subscriber ({count:,} subscribers)", "KiB", False
                ).add(target, (after - before) / count)
                seconds = []
                for _ in range(FANOUT_WRITES):
                    stamp = time.monotonic()
                    await writer.stamp("fanout", stamp)
                    seconds.append(await watching.ask(("reached", stamp)))
                self.row(f"one write reaching all of {count:,} subscribers", "s", False).add(
                    target, statistics.median(seconds)
                )
        finally:
            await writer.close()

    async def _durable(self, target: str, port: int) -> None:
        writers = [await open_writer(target, port) for _ in range(DURABLE_WRITERS)]
        try:
            rates = await asyncio.gather(
                *(writer.one_at_a_time(DURABLE_SECONDS) for writer in writers)
            )
        finally:
            for writer in writers:
                await writer.close()
        workload = (
            f"durable acked writes/s, {DURABLE_WRITERS} writers "
            "(statehub --data, ack after disk; Redis appendfsync always)"
        )
        self.row(workload, "writes/s").add(target, sum(rates))

    def results(self) -> list[Result]:
        """One row per workload and target: the median, and its ratio to Redis."""
        results = []
        for row in self.rows.values():
            redis = statistics.median(row.figures["redis"]) if "redis" in row.figures else None
            for target, figures in row.figures.items():
                median = statistics.median(figures)
                ratio = f" ({median / redis:.2f}x Redis)" if redis and target != "redis" else ""
                results.append(Result(f"{row.workload}: {_NAMES[target]}{ratio}", median, row.unit))
        return results

    def spread(self) -> str:
        """Each row's figures round by round, per target (how noisy the medians are)."""
        lines = []
        for row in self.rows.values():
            figures = "; ".join(
                f"{_NAMES[target]}: " + ", ".join(_format(figure) for figure in values)
                for target, values in row.figures.items()
            )
            lines.append(f"  {row.workload} ({row.unit}): {figures}")
        return "\n".join(lines)

    def table(self) -> str:
        names = _NAMES
        header = ["workload", *(names[t] for t in self.targets)]
        ratios = [t for t in self.targets if t != "redis"] if "redis" in self.targets else []
        header += [f"{names[t]} / Redis" for t in ratios]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
        ]
        for row in self.rows.values():
            medians = {t: statistics.median(row.figures[t]) for t in row.figures}
            rounds = min(len(figures) for figures in row.figures.values())
            cells = [row.workload]
            if rounds < self.rounds:
                cells[0] += f" (only {rounds} of {self.rounds} rounds succeeded)"
            cells += [
                f"{_format(medians[t])} {row.unit}" if t in medians else "-" for t in self.targets
            ]
            for t in ratios:
                if t in medians and medians.get("redis"):
                    ratio = medians[t] / medians["redis"]
                    cells.append(
                        f"{ratio:.2f}" + ("" if row.higher_is_better else " (lower: better)")
                    )
                else:
                    cells.append("-")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _format(figure: float) -> str:
    if figure >= 100:
        return f"{figure:,.0f}"
    return f"{figure:.3g}"


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


#: The workload families, in the order a round runs them (``--workloads`` picks some):
#: acked writes, writes with 10/100 subscribers, latency, idle memory + one write
#: reaching all, durable writes.
WORKLOAD_NAMES = ("writes", "subscribers", "latency", "fanout", "durable")

#: Set by ``statehub bench --peer/--rounds/--workloads``.
PEER: str | None = None
ROUNDS = 3
WORKLOADS: tuple[str, ...] = WORKLOAD_NAMES
FANOUT_COUNTS = (1_000, 5_000, 10_000)
_NAMES = {"grpc": "statehub over gRPC", "tcp": "statehub over TCP", "redis": "Redis"}


def run() -> list[Result]:
    """Every workload ``ROUNDS`` times on each target, interleaved: medians, with ratios."""
    targets = ("grpc", "tcp", "redis") if PEER == "redis" else ("grpc", "tcp")
    raise_file_limit()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    counts = tuple(count for count in FANOUT_COUNTS if count + 100 <= soft)  # per process
    if counts != FANOUT_COUNTS:
        log(f"file-descriptor limit {soft}: fan-out measured for {counts} subscribers only")
    bench = Bench(targets, ROUNDS, counts)
    load_before = _load()
    asyncio.run(bench.run())
    log(f"load average before {load_before}, after {_load()}; {machine()}")
    log(f"medians of {ROUNDS} interleaved rounds:\n{bench.table()}")
    log("every round's figures:\n" + bench.spread())
    return bench.results()
