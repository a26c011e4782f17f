"""Momotor workers on statehub's locks: grant round trips, and many workers contending.

The server is ``statehub serve`` in its own process (memory store); the clients run in
this one. A Momotor worker is Momotor's own client (``momotor.rpc.shared.SharedState``
over a grpclib channel, as a worker uses it); statehub's is ``AsyncClient.get_lock``.

- Round trip: the time from asking for a free lock to holding it (one ``sharedLock``
  stream opened and answered; one ``lock`` request answered), in interleaved rounds so
  that load from elsewhere falls on both alike. The release is not counted.
- Contention: ``WORKERS`` clients, each on its own connection, each taking and releasing
  the exclusive lock on one of ``KEYS`` keys in a loop for ``CONTENTION_S`` seconds;
  grants per second over all of them. The clients share one process (and its core), so on
  a small machine the figure is bounded by the clients as much as by the server.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from importlib.util import find_spec
from typing import Any

from statehub.bench.fleet import start_serve, stop
from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient
from statehub.extras import MissingExtraError

ROUNDS = 5
GRANTS_PER_ROUND = 400
WARMUP = 100
WORKERS = 100
KEYS = 10
CONTENTION_S = 5.0

Locker = Callable[[str], AbstractAsyncContextManager[Any]]


def run() -> list[Result]:
    if find_spec("momotor") is None or find_spec("momotor.rpc.shared") is None:
        raise MissingExtraError(
            "statehub bench momotor needs Momotor's client: pip install "
            "momotor-engine-shared momotor-engine-proto (both in statehub's 'dev' extra)"
        )
    process, port = start_serve("--no-tcp")
    try:
        return asyncio.run(_run_all(port))
    finally:
        stop(process)


async def _run_all(port: int) -> list[Result]:
    momotor: list[float] = []
    own: list[float] = []
    async with _worker(port) as state, AsyncClient("127.0.0.1", port, reconnect=False) as client:
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
                    f"grant round trip of a free exclusive lock, {name}, {label} "
                    f"({len(times)} grants in {ROUNDS} interleaved rounds)",
                    statistics.quantiles(times, n=100)[quantile] * 1000,
                    "ms",
                )
            )
    async with AsyncExitStack() as stack:
        states = [await stack.enter_async_context(_worker(port)) for _ in range(WORKERS)]
        rate = await _contend([state.get_lock for state in states])
    results.append(
        Result(
            f"{WORKERS} Momotor workers contending for exclusive locks on {KEYS} keys "
            f"({CONTENTION_S:g} s)",
            rate,
            "grants/s",
        )
    )
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(AsyncClient("127.0.0.1", port, reconnect=False))
            for _ in range(WORKERS)
        ]
        rate = await _contend([client.get_lock for client in clients])
    results.append(
        Result(
            f"{WORKERS} AsyncClients contending the same way ({KEYS} keys, {CONTENTION_S:g} s)",
            rate,
            "grants/s",
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


async def _contend(lockers: list[Locker]) -> float:
    """Grants per second: each locker takes and releases its key until the time is up."""
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
    return grants / (time.perf_counter() - started)
