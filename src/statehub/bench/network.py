"""Network workloads: acknowledged writes, fan-out to subscribers, latency, connecting.

The server and the writing client share this process (one asyncio loop); subscribers run
in a separate process (their own loop), so on a 2-core machine the writer+server get one
core and the subscribers the other, instead of the subscribers' decoding being charged to
the writer. ``TARGET`` (set by ``statehub bench --host/--port``) points the workloads at a
running server instead of starting one here.

Latency is measured from just before the writer sends a value to when a subscriber
decodes it, both read with ``time.monotonic()`` (CLOCK_MONOTONIC, shared by the
processes of one machine).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection as Pipe
from typing import Any

from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient
from statehub.serving.state_server import StateServer

#: ``(host, port)`` of a server to measure instead of an in-process one.
TARGET: tuple[str, int] | None = None

WRITES = 20_000
WINDOW = 512  # writes in flight from the one pipelining client
KEYS = 100
LATENCY_RATE = 200.0  # writes/s
LATENCY_SECONDS = 5.0
CONNECT_SUBSCRIBERS = 1_000


def run() -> list[Result]:
    """Run every network workload and return the table rows."""
    _raise_file_limit()
    return asyncio.run(_run_all())


async def _run_all() -> list[Result]:
    results: list[Result] = []
    async with _server() as (host, port):
        results.append(await _writes(host, port, 0, 0.0))
        for subscribers in (10, 100):
            for interval in (0.0, 1 / 30):
                results.append(await _writes(host, port, subscribers, interval))
        results.extend(await _latency(host, port, 10))
        results.append(await _connect(host, port, CONNECT_SUBSCRIBERS))
    return results


@asynccontextmanager
async def _server() -> AsyncIterator[tuple[str, int]]:
    if TARGET is not None:
        yield TARGET
        return
    server = StateServer(address="127.0.0.1", port=0)
    await server.start()
    try:
        yield "127.0.0.1", server.port
    finally:
        await server.stop()


def _interval_name(interval: float) -> str:
    return "interval 0" if interval == 0 else f"interval 1/{round(1 / interval)} s"


async def _writes(host: str, port: int, subscribers: int, interval: float) -> Result:
    async with _Subscribers(host, port, subscribers, interval) as watching:
        async with AsyncClient(host, port, reconnect=False) as writer:
            await _pipelined_writes(writer, 1_000)  # warm up
            watching.reset()
            started = time.perf_counter()
            await _pipelined_writes(writer, WRITES)
            elapsed = time.perf_counter() - started
        stats = await watching.stats()
    if subscribers:
        watchers = f"{subscribers} subscribers at {_interval_name(interval)}"
        received = f", subscribers got {stats['batches'] / elapsed:,.0f} batches/s"
    else:
        watchers, received = "no subscribers", ""
    return Result(
        f"acknowledged 1-key writes, 1 client, {WINDOW} in flight, {watchers}{received}",
        WRITES / elapsed,
        "writes/s",
    )


async def _pipelined_writes(client: AsyncClient, count: int) -> None:
    """``count`` single-key writes from ``WINDOW`` tasks: WINDOW requests always in flight."""

    async def worker(first: int) -> None:
        for i in range(first, count, WINDOW):
            await client.set(f"key{i % KEYS}", i)

    await asyncio.gather(*(worker(first) for first in range(min(WINDOW, count))))


async def paced_latency_writes(writer: AsyncClient, count: int) -> None:
    """``count`` writes of the time sent to the key "latency", paced at ``LATENCY_RATE``
    (each due at its own time, so a late one does not delay the rest)."""
    period = 1 / LATENCY_RATE
    started = time.monotonic()
    for i in range(count):
        delay = started + i * period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await writer.set("latency", time.monotonic())


async def _latency(host: str, port: int, subscribers: int) -> list[Result]:
    async with _Subscribers(host, port, subscribers, 0.0) as watching:
        async with AsyncClient(host, port, reconnect=False) as writer:
            watching.reset()
            count = int(LATENCY_RATE * LATENCY_SECONDS)
            await paced_latency_writes(writer, count)
        stats = await watching.stats(settle=0.2)
    samples = sorted(stats["latencies"])
    expected = count * subscribers
    where = (
        f"{LATENCY_RATE:.0f} writes/s, {subscribers} subscribers at interval 0, "
        f"{len(samples):,}/{expected:,} deliveries"
    )
    if not samples:
        return [Result(f"write-to-subscriber latency ({where})", float("nan"), "ms")]
    return [
        Result(f"write-to-subscriber latency p50 ({where})", _quantile(samples, 0.5), "ms"),
        Result(f"write-to-subscriber latency p99 ({where})", _quantile(samples, 0.99), "ms"),
    ]


def _quantile(sorted_samples: list[float], q: float) -> float:
    index = min(len(sorted_samples) - 1, round(q * (len(sorted_samples) - 1)))
    return sorted_samples[index] * 1000


async def _connect(host: str, port: int, subscribers: int) -> Result:
    async with _Subscribers(host, port, subscribers, 1 / 30) as watching:
        seconds = watching.connect_seconds
    return Result(
        f"connect + subscribe {subscribers:,} clients (each has its first snapshot), "
        "one process, 100 at a time",
        seconds,
        "s",
    )


class _Subscribers:
    """``count`` subscriber clients in a child process, each subscribed to everything."""

    def __init__(self, host: str, port: int, count: int, interval: float) -> None:
        self._args = (host, port, count, interval)
        self._count = count
        self._pipe: Pipe | None = None
        self._process: Any = None
        self.connect_seconds = 0.0

    async def __aenter__(self) -> _Subscribers:
        if not self._count:
            return self
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._pipe = parent
        self._process = context.Process(
            target=_subscriber_process, args=(*self._args, child), daemon=True
        )
        self._process.start()
        reply = await self._receive()
        if reply[0] != "ready":
            raise RuntimeError(f"subscriber process failed: {reply[1]}")
        self.connect_seconds = reply[1]
        return self

    def reset(self) -> None:
        if self._pipe is not None:
            self._pipe.send(("reset",))

    async def stats(self, settle: float = 0.0) -> dict[str, Any]:
        if self._pipe is None:
            return {"batches": 0, "latencies": []}
        await asyncio.sleep(settle)  # let deliveries in flight arrive
        self._pipe.send(("stats",))
        reply = await self._receive()
        stats: dict[str, Any] = reply[1]
        return stats

    async def _receive(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self._receive_blocking)

    def _receive_blocking(self) -> Any:
        assert self._pipe is not None
        while not self._pipe.poll(0.2):
            if not self._process.is_alive():
                raise RuntimeError(
                    f"the subscriber process exited with code {self._process.exitcode}"
                )
        return self._pipe.recv()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pipe is None:
            return
        self._pipe.send(("stop",))
        await asyncio.get_running_loop().run_in_executor(None, self._process.join, 30)
        if self._process.is_alive():
            self._process.kill()
        self._pipe.close()


def _subscriber_process(host: str, port: int, count: int, interval: float, pipe: Pipe) -> None:
    _raise_file_limit()
    try:
        asyncio.run(_subscribers(host, port, count, interval, pipe))
    except Exception as error:
        pipe.send(("error", f"{type(error).__name__}: {error}"))


async def _subscribers(host: str, port: int, count: int, interval: float, pipe: Pipe) -> None:
    latencies: list[float] = []
    batches = [0]
    gate = asyncio.Semaphore(100)
    clients = [AsyncClient(host, port, reconnect=False, connect_timeout=60) for _ in range(count)]

    async def watch(client: AsyncClient, ready: Callable[[], None]) -> None:
        async with gate:
            await client.connect()
            changes = client.subscribe(interval=interval)
            await anext(changes)  # the first snapshot
        ready()
        async for change in changes:
            now = time.monotonic()
            batches[0] += 1
            sent = change.updates.get("latency")
            if type(sent) is float:
                latencies.append(now - sent)

    remaining = [count]
    all_ready = asyncio.Event()

    def one_ready() -> None:
        remaining[0] -= 1
        if not remaining[0]:
            all_ready.set()

    started = time.perf_counter()
    tasks = [asyncio.create_task(watch(client, one_ready)) for client in clients]
    waiting = asyncio.create_task(all_ready.wait())
    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not all_ready.is_set():
        failed = next(task for task in tasks if task.done())
        failed.result()  # raises what went wrong
    pipe.send(("ready", time.perf_counter() - started))
    loop = asyncio.get_running_loop()
    while True:
        command = (await loop.run_in_executor(None, pipe.recv))[0]
        if command == "reset":
            latencies.clear()
            batches[0] = 0
        elif command == "stats":
            pipe.send(("stats", {"batches": batches[0], "latencies": list(latencies)}))
        else:
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


def _raise_file_limit() -> None:
    """1,000 clients need more than the usual 1,024 open files (server and subscribers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
