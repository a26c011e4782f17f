"""``statehub bench client``: what users get, through the public clients, next to redis-py.

Every statehub figure goes through ``AsyncClient``, ``Client`` or the ``statehub`` command
on the default address (``statehub://host:port``, plain TCP), against ``statehub serve``
in a child process; with ``--peer redis`` the same workloads run through redis-py (with
hiredis when installed, as it is in statehub's lock) against a ``redis-server`` the bench
starts itself. Targets alternate within each round, and the table shows the median of
the rounds with the ratio statehub / redis-py. Subscribers live in a child process of
their own (one client each), so their decoding is not charged to the writer.

What each workload sends to Redis: a ``SET`` per write; with subscribers, ``SET`` and a
``PUBLISH`` of ``key=value`` on one channel (Redis pub/sub fan-out, as issue 21's table).
The raw-frame figures of ``statehub bench fanout`` are the server's ceiling, without any
client library.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from statehub.bench.fanout import redis_server
from statehub.bench.fleet import start_serve_ports, stop
from statehub.bench.network import _raise_file_limit as raise_file_limit
from statehub.bench.table import Result, machine

#: Set by ``statehub bench client --peer/--rounds`` (and by tests, to run it small).
PEER: str | None = None
ROUNDS = 3
SECONDS = 2.0
IN_FLIGHT = 64
KEYS = 100
SUBSCRIBERS = 100
LATENCY_RATE = 2_000
LATENCY_SUBSCRIBERS = 10
IDLE_COUNTS = (1_000, 10_000)
CLI_RUNS = 10
#: The Redis channel every write is published on, as ``key=value``.
CHANNEL = "state"
#: Seconds a child process may take to connect its subscribers or answer.
PATIENCE = 300.0
#: Subscribers connecting at once: more at a time, on a loaded machine, keep the server's
#: handshake deadline (10 s from accept to the first frame) for some of them.
CONNECTING_AT_ONCE = 20

TARGETS = ("statehub", "redis")
_NAMES = {"statehub": "statehub (statehub://)", "redis": "redis-py"}


@dataclass
class Row:
    """One workload: its figure per target, one per round."""

    workload: str
    unit: str
    higher_is_better: bool = True
    figures: dict[str, list[float]] = field(default_factory=dict)

    def median(self, target: str) -> float | None:
        """The median of the rounds that measured (a failed round's NaN is left out; NaN
        if none did)."""
        figures = self.figures.get(target)
        if not figures:
            return None
        measured = [figure for figure in figures if not math.isnan(figure)]
        return statistics.median(measured) if measured else float("nan")


@dataclass(frozen=True)
class Served:
    """A server of one target for one round: where clients reach it, its process id."""

    target: str
    port: int
    pid: int


def rows() -> list[Row]:
    """The workloads, in table order."""
    return [
        Row(f"async, {IN_FLIGHT} sets in flight (asyncio.gather / pipeline)", "sets/s"),
        Row("async, one set at a time", "sets/s"),
        Row("blocking Client, sequential sets", "sets/s"),
        Row("blocking Client, sequential gets", "gets/s"),
        Row(
            f"writes/s, {IN_FLIGHT} in flight, {SUBSCRIBERS} subscribers at interval 0", "writes/s"
        ),
        Row(
            f"write-to-subscriber p99, {LATENCY_RATE:,} writes/s, "
            f"{LATENCY_SUBSCRIBERS} subscribers",
            "ms",
            higher_is_better=False,
        ),
        *(
            Row(f"server memory per idle subscriber ({count:,})", "KiB", higher_is_better=False)
            for count in IDLE_COUNTS
        ),
        Row("CLI get wall time (statehub get / redis-cli get)", "ms", higher_is_better=False),
    ]


def run() -> list[Result]:
    """Every workload ``ROUNDS`` times per target, targets interleaved: medians."""
    raise_file_limit()
    targets = TARGETS if PEER == "redis" else TARGETS[:1]
    table = rows()
    for number in range(1, ROUNDS + 1):
        for target in targets:
            _log(f"round {number}/{ROUNDS}: {_NAMES[target]}")
            with _server(target) as served:
                figures = asyncio.run(_round(served))
            for row, figure in zip(table, figures, strict=True):
                row.figures.setdefault(target, []).append(figure)
    results = []
    for row in table:
        for target in targets:
            median = row.median(target)
            assert median is not None
            results.append(Result(f"{row.workload}: {_NAMES[target]}", median, row.unit))
        if len(targets) == 2:
            results.append(Result(f"{row.workload}: statehub / redis-py", _ratio(row), "x"))
    _log(f"{machine()}; medians of {ROUNDS} interleaved rounds:\n{side_by_side(table)}")
    return results


def format_results(title: str, results: list[Result]) -> str:
    """``run()``'s results as the side-by-side table, under ``title`` and the machine."""
    table: dict[str, Row] = {}
    names = {name: target for target, name in _NAMES.items()}
    for result in results:
        workload, _, who = result.workload.rpartition(": ")
        if who in names:
            row = table.setdefault(workload, Row(workload, result.unit))
            row.figures[names[who]] = [result.figure]
    lower = {row.workload for row in rows() if not row.higher_is_better}
    for row in table.values():
        row.higher_is_better = row.workload not in lower
    return f"{title} ({machine()})\n\n{side_by_side(list(table.values()))}"


def side_by_side(table: list[Row]) -> str:
    """A Markdown table: each workload's medians per target and their ratio."""
    lines = [
        "| workload (public clients) | statehub (statehub://) | redis-py | statehub / redis-py |",
        "|---|---|---|---|",
    ]
    for row in table:
        medians = [row.median(target) for target in TARGETS]
        cells = ["-" if m is None else f"{_format(m)} {row.unit}" for m in medians]
        ratio = _ratio(row) if row.median("redis") else None
        note = "" if row.higher_is_better else " (lower is better)"
        lines.append(
            f"| {row.workload} | {cells[0]} | {cells[1]} | "
            f"{'-' if ratio is None else f'{ratio:.2f}{note}'} |"
        )
    return "\n".join(lines)


def _ratio(row: Row) -> float:
    mine, theirs = row.median("statehub"), row.median("redis")
    return mine / theirs if mine is not None and theirs else float("nan")


def _format(figure: float) -> str:
    return f"{figure:,.0f}" if figure >= 100 else f"{figure:.3g}"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- servers ------------------------------------------------------------------------------


@contextmanager
def _server(target: str) -> Iterator[Served]:
    if target == "redis":
        with redis_server() as redis:
            yield Served("redis", redis.port, redis.process.pid)
        return
    process, ports = start_serve_ports("--no-http")
    try:
        yield Served("statehub", ports.tcp, process.pid)
    finally:
        stop(process)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


# -- one round on one target ----------------------------------------------------------------


async def _round(served: Served) -> list[float]:
    writer = await _AsyncWriter.open(served)
    try:
        figures = [
            await _timed(SECONDS, IN_FLIGHT, writer.pipelined),
            await _timed(SECONDS, 1, writer.one_at_a_time),
        ]
        figures += await asyncio.to_thread(_blocking, served)
        async with Subscribers(served, SUBSCRIBERS, "count"):
            figures.append(await _timed(SECONDS, IN_FLIGHT, writer.pipelined_published))
        async with Subscribers(served, LATENCY_SUBSCRIBERS, "latency") as watching:
            await _paced(writer, LATENCY_RATE, SECONDS)
            latencies: list[float] = await watching.finish()
        figures.append(_percentile(latencies, 0.99) if latencies else float("nan"))
        for count in IDLE_COUNTS:
            figures.append(await _memory_per_subscriber(served, count))
    finally:
        await writer.close()
    figures.append(await asyncio.to_thread(_cli_get_ms, served))
    return figures


async def _memory_per_subscriber(served: Served, count: int) -> float:
    """KiB the server's RSS grows by per idle subscriber; NaN (logged) if they could not
    all connect, so that the other rows of the round are kept."""
    before = rss_kib(served.pid)
    try:
        async with Subscribers(served, count, "idle"):
            after = rss_kib(served.pid)
    except (RuntimeError, TimeoutError) as error:
        _log(f"{count:,} idle subscribers on {_NAMES[served.target]}: {error}")
        return float("nan")
    return (after - before) / count


async def _timed(seconds: float, per_step: int, step: Callable[[int], Awaitable[None]]) -> float:
    """Steps of ``per_step`` operations for ``seconds``: operations per second."""
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        await step(done)
        done += per_step
    return done / (time.perf_counter() - started)


async def _paced(writer: _AsyncWriter, rate: int, seconds: float) -> None:
    """Stamped writes at ``rate`` per second, each sent on schedule without waiting for the
    one before (a write waits only for its own reply)."""
    started = time.monotonic()
    sent: list[asyncio.Task[None]] = []
    for number in range(int(rate * seconds)):
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(asyncio.create_task(writer.stamp(time.monotonic())))
    await asyncio.gather(*sent)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _AsyncWriter:
    """The one writing client of a round: ``AsyncClient`` or ``redis.asyncio.Redis``."""

    def __init__(self, served: Served, client: Any) -> None:
        self.served = served
        self.client = client

    @classmethod
    async def open(cls, served: Served) -> _AsyncWriter:
        if served.target == "redis":
            import redis.asyncio

            # Writes in flight wait for a free connection, as statehub's share its one.
            pool = redis.asyncio.BlockingConnectionPool(
                port=served.port, max_connections=IN_FLIGHT, timeout=None
            )
            return cls(served, redis.asyncio.Redis(connection_pool=pool))
        from statehub.client.async_client import AsyncClient

        client = AsyncClient(f"statehub://127.0.0.1:{served.port}", reconnect=False)
        await client.connect()
        return cls(served, client)

    async def pipelined(self, first: int) -> None:
        if self.served.target == "redis":
            pipe = self.client.pipeline(transaction=False)
            for number in range(first, first + IN_FLIGHT):
                pipe.set(_key(number), number)
            await pipe.execute()
        else:
            await asyncio.gather(
                *(self.client.set(_key(n), n) for n in range(first, first + IN_FLIGHT))
            )

    async def pipelined_published(self, first: int) -> None:
        """As ``pipelined``; Redis also publishes each write (its subscribers' fan-out)."""
        if self.served.target != "redis":
            await self.pipelined(first)
            return
        pipe = self.client.pipeline(transaction=False)
        for number in range(first, first + IN_FLIGHT):
            pipe.set(_key(number), number)
            pipe.publish(CHANNEL, f"{_key(number)}={number}")
        await pipe.execute()

    async def one_at_a_time(self, number: int) -> None:
        await self.client.set(_key(number), number)

    async def stamp(self, now: float) -> None:
        if self.served.target == "redis":
            pipe = self.client.pipeline(transaction=False)
            pipe.set("bench.stamp", now)
            pipe.publish(CHANNEL, f"bench.stamp={now!r}")
            await pipe.execute()
        else:
            await self.client.set("bench.stamp", now)

    async def close(self) -> None:
        if self.served.target == "redis":
            await self.client.aclose()
            await self.client.connection_pool.disconnect()
        else:
            await self.client.close()


def _key(number: int) -> str:
    return f"bench.{number % KEYS}"


def _blocking(served: Served) -> list[float]:
    """Sequential sets, then gets, from the blocking client: operations per second."""
    if served.target == "redis":
        import redis

        client: Any = redis.Redis(port=served.port)
    else:
        from statehub.client.sync_client import Client

        client = Client(f"statehub://127.0.0.1:{served.port}", reconnect=False)
    try:
        figures = []
        operations: tuple[Callable[[int], object], ...] = (
            lambda n: client.set(_key(n), n),
            lambda n: client.get(_key(n)),
        )
        for operation in operations:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < SECONDS:
                operation(done)
                done += 1
            figures.append(done / (time.perf_counter() - started))
        return figures
    finally:
        client.close()


def _cli_get_ms(served: Served) -> float:
    """Median wall time of ``CLI_RUNS`` runs of ``statehub get`` (or ``redis-cli get``);
    NaN (logged, with the command's error) if a run fails, so that the other rows of the
    round are kept."""
    if served.target == "redis":
        command = [shutil.which("redis-cli") or "redis-cli", "-p", str(served.port)]
        command += ["get", "bench.0"]
        environment = None
    else:
        script = Path(sys.executable).with_name("statehub")
        command = [str(script)] if script.exists() else _STATEHUB_MODULE
        command += ["get", "bench.0"]
        environment = {**os.environ, "STATEHUB_URL": f"statehub://127.0.0.1:{served.port}"}
    times = []
    for _ in range(CLI_RUNS):
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, env=environment, timeout=60)
        if run.returncode != 0:
            error = run.stderr.decode(errors="replace").strip()
            _log(f"{command[-2:]} on {_NAMES[served.target]} failed: {error}")
            return float("nan")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


_STATEHUB_MODULE = [sys.executable, "-c", "from statehub.cli import main; main()"]


# -- subscribers in a child process ---------------------------------------------------------


class Subscribers:
    """``count`` subscribers, one client each, in a child process, while in the block.

    ``mode``: "count" (count what arrives), "latency" (write-to-subscriber delays of the
    stamped writes, in ms, from ``finish()``) or "idle" (subscribed, nothing written).
    """

    def __init__(self, served: Served, count: int, mode: str) -> None:
        self.served, self.count, self.mode = served, count, mode
        context = multiprocessing.get_context("spawn")
        self._pipe, theirs = context.Pipe()
        self._process = context.Process(
            target=_subscriber_process, args=(served, count, mode, theirs), daemon=True
        )

    async def __aenter__(self) -> Subscribers:
        self._process.start()
        reply = await self._receive()
        if reply != "ready":
            raise RuntimeError(f"the subscribers did not start: {reply!r}")
        return self

    async def finish(self) -> Any:
        """Stop, and return what the subscribers measured."""
        await asyncio.sleep(0.2)  # the last writes' deliveries are on their way
        self._pipe.send("stop")
        return await self._receive()

    async def _receive(self) -> Any:
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self._pipe.poll, PATIENCE)
        if not ready:
            raise TimeoutError(f"{self.count} subscribers did not answer within {PATIENCE} s")
        try:
            return self._pipe.recv()
        except EOFError:
            await asyncio.to_thread(self._process.join)
            raise RuntimeError(
                f"the subscribers' process ended (exit code {self._process.exitcode})"
            ) from None

    async def __aexit__(self, *exc_info: object) -> None:
        if self._process.is_alive():
            self._process.kill()
        await asyncio.to_thread(self._process.join)


def _subscriber_process(served: Served, count: int, mode: str, pipe: Pipe) -> None:
    raise_file_limit()
    try:
        asyncio.run(_subscribe(served, count, mode, pipe))
    except Exception as error:  # the parent waits for a reply: give it the reason
        pipe.send(f"{type(error).__name__}: {error}")


async def _subscribe(served: Served, count: int, mode: str, pipe: Pipe) -> None:
    latencies: list[float] = []

    def saw(text: str) -> None:
        if mode == "latency":
            latencies.append((time.monotonic() - float(text)) * 1000)

    ready = [asyncio.Event() for _ in range(count)]
    watch = _watch_redis if served.target == "redis" else _watch_statehub
    connecting = asyncio.Semaphore(CONNECTING_AT_ONCE)
    tasks = [asyncio.create_task(watch(served.port, event, saw, connecting)) for event in ready]
    waiting: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(asyncio.gather(*(event.wait() for event in ready))),
        *tasks,
    ]
    await asyncio.wait(waiting, timeout=PATIENCE, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        if task.done():
            task.result()  # a subscriber that ended before all were ready: its error
    pipe.send("ready")
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    pipe.send(latencies)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _watch_statehub(
    port: int, ready: asyncio.Event, saw: Callable[[str], None], connecting: asyncio.Semaphore
) -> None:
    from statehub.client.async_client import AsyncClient

    client = AsyncClient(f"statehub://127.0.0.1:{port}", reconnect=False, connect_timeout=PATIENCE)
    changes = client.subscribe(interval=0, prefix="bench.")
    try:
        async with connecting:
            await anext(changes)  # the snapshot: subscribed
        ready.set()
        async for change in changes:
            stamp = change.updates.get("bench.stamp")
            if stamp is not None:
                saw(repr(stamp))
    finally:
        await changes.aclose()
        await client.close()


async def _watch_redis(
    port: int, ready: asyncio.Event, saw: Callable[[str], None], connecting: asyncio.Semaphore
) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis(port=port, socket_connect_timeout=PATIENCE)
    pubsub = client.pubsub()
    try:
        async with connecting:
            await pubsub.subscribe(CHANNEL)
            while (await pubsub.get_message(timeout=PATIENCE)) is None:
                pass  # until the subscription's confirmation
        ready.set()
        async for message in pubsub.listen():
            if message["type"] == "message":
                key, _, value = bytes(message["data"]).decode().partition("=")
                if key == "bench.stamp":
                    saw(value)
    finally:
        await pubsub.aclose()
        await client.aclose()


__all__ = ["Row", "Subscribers", "format_results", "rows", "run", "side_by_side"]
