"""Momotor workers on statehub's locks: grant round trips, and many workers contending.

The server is ``statehub serve`` in its own process (memory store); the clients run in
this one. A Momotor worker is Momotor's own client (``momotor.rpc.shared.SharedState``
over a grpclib channel, as a worker uses it); statehub's is ``AsyncClient.get_lock``.

- Round trip: the time from asking for a free lock to holding it (one ``sharedLock``
  stream opened and answered; one ``lock`` request answered), in interleaved rounds so
  that load from elsewhere falls on both alike. The release is not counted.
- The same round trips through a server whose locks live in Redis (``--store redis://``),
  when ``redis-server`` is on PATH: what a grant costs when several servers share locks.
- Contention: ``WORKERS`` clients, each on its own connection, each taking and releasing
  the exclusive lock on one of ``KEYS`` keys in a loop for ``CONTENTION_S`` seconds;
  grants per second over all of them. The clients share one process (and its core), so on
  a small machine the figure is bounded by the clients as much as by the server.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from statehub.bench.fleet import ServedPorts, start_redis, start_serve_ports, stop
from statehub.bench.room import process_cpu_seconds
from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient
from statehub.extras import MissingExtraError

ROUNDS = 5
GRANTS_PER_ROUND = 400
WARMUP = 100
WORKERS = 100
KEYS = 10
CONTENTION_S = 5.0
#: Also measure the round trips through a server on Redis (when redis-server is on PATH).
REDIS = True

Locker = Callable[[str], AbstractAsyncContextManager[Any]]


def run() -> list[Result]:
    if find_spec("momotor") is None or find_spec("momotor.rpc.shared") is None:
        raise MissingExtraError(
            "statehub bench momotor needs Momotor's client: pip install "
            "momotor-engine-shared momotor-engine-proto (both in statehub's 'dev' extra)"
        )
    process, ports = start_serve_ports()
    try:
        results = asyncio.run(_run_all(ports, process.pid))
    finally:
        stop(process)
    if REDIS and shutil.which("redis-server") is not None:
        results += _on_redis()
    return results


def _on_redis() -> list[Result]:
    """The grant round trips again, through a server whose locks are in Redis."""
    with tempfile.TemporaryDirectory(prefix="statehub-bench-") as directory:
        redis = start_redis(Path(directory) / "redis")
        try:
            process, ports = start_serve_ports("--store", redis.url)
            try:
                return asyncio.run(_round_trips(ports, "one server on Redis"))
            finally:
                stop(process)
        finally:
            stop(redis.process)


async def _run_all(ports: ServedPorts, server_pid: int) -> list[Result]:
    results = await _round_trips(ports, "memory")
    async with AsyncExitStack() as stack:
        states = [await stack.enter_async_context(_worker(ports.grpc)) for _ in range(WORKERS)]
        results += await _contention(
            [state.get_lock for state in states],
            f"{WORKERS} Momotor workers contending for exclusive locks on {KEYS} keys",
            server_pid,
        )
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(AsyncClient("127.0.0.1", ports.tcp, reconnect=False))
            for _ in range(WORKERS)
        ]
        results += await _contention(
            [client.get_lock for client in clients],
            f"{WORKERS} AsyncClients contending the same way",
            server_pid,
        )
    return results


async def _contention(lockers: list[Locker], name: str, server_pid: int) -> list[Result]:
    """Grants/s, and the server's and the clients' CPU per grant (what bounds the rate)."""
    server_cpu, client_cpu = process_cpu_seconds(server_pid), time.process_time()
    grants, seconds = await _contend(lockers)
    server_cpu = process_cpu_seconds(server_pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    return [
        Result(f"{name} ({CONTENTION_S:g} s)", grants / seconds, "grants/s"),
        Result(f"{name}: server CPU per grant", server_cpu / max(grants, 1) * 1e6, "us"),
        Result(
            f"{name}: the clients' process CPU per grant (one process)",
            client_cpu / max(grants, 1) * 1e6,
            "us",
        ),
    ]


async def _round_trips(ports: ServedPorts, store: str) -> list[Result]:
    """p50 and p99 grant round trips of a Momotor worker and of an AsyncClient."""
    momotor: list[float] = []
    own: list[float] = []
    async with (
        _worker(ports.grpc) as state,
        AsyncClient("127.0.0.1", ports.tcp, reconnect=False) as client,
    ):
        await _grant_times(state.get_lock, WARMUP)
        await _grant_times(client.get_lock, WARMUP)
        for _ in range(ROUNDS):
            momotor += await _grant_times(state.get_lock, GRANTS_PER_ROUND)
            own += await _grant_times(client.get_lock, GRANTS_PER_ROUND)
    results = []
    for name, times in (("a Momotor worker (SharedState)", momotor), ("AsyncClient", own)):
        for label, quantile in (("p50", 49), ("p99", 98)):
            results.append(
                Result(
                    f"grant round trip of a free exclusive lock, {store}, {name}, {label} "
                    f"({len(times)} grants in {ROUNDS} interleaved rounds)",
                    statistics.quantiles(times, n=100)[quantile] * 1000,
                    "ms",
                )
            )
    return results


@asynccontextmanager
async def _worker(port: int) -> AsyncIterator[Any]:
    """A Momotor worker's shared state, on its own grpclib channel."""
    from grpclib.client import Channel
    from momotor.rpc.proto.worker_grpc import WorkerStub
    from momotor.rpc.shared import SharedState

    channel = Channel("127.0.0.1", port)
    try:
        yield SharedState(WorkerStub(channel))
    finally:
        channel.close()


async def _grant_times(lock: Locker, count: int) -> list[float]:
    """Seconds from asking for the free lock ``bench/rtt`` to holding it, ``count`` times."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        async with lock("bench/rtt"):
            times.append(time.perf_counter() - started)
    return times


async def _contend(lockers: list[Locker]) -> tuple[int, float]:
    """Grants, and seconds: each locker takes and releases its key until the time is up."""
    loop = asyncio.get_running_loop()
    grants = 0
    started = time.perf_counter()
    ends = loop.time() + CONTENTION_S

    async def take(number: int, lock: Locker) -> None:
        nonlocal grants
        key = f"bench/contended/{number % KEYS}"
        while loop.time() < ends:
            async with lock(key):
                grants += 1

    await asyncio.gather(*(take(number, lock) for number, lock in enumerate(lockers)))
    return grants, time.perf_counter() - started
