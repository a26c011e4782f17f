"""Web workloads: the session protocol over WebSocket next to gRPC, and NanoVer's room.

Each pair runs interleaved (gRPC, WebSocket, gRPC, ...) against one in-process server, and
the table gives the median of the rounds and the WebSocket/gRPC ratio, since the machine
is shared and noisy. The pipelining writer and the subscribers run in child processes, as
in the network group, so their decoding is not charged to the server.

The room (``statehub.bench.room``): 100 clients each writing its avatar at 30 Hz, against
a ``statehub serve`` process of its own, with the clients spread over worker processes.
The dashboard's own cost (``statehub.bench.dashboard``): server CPU per open dashboard and
bytes/s to the page, 10,000 keys changing at 30 Hz. The machine's load average, at the
start and the end, closes the table.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager

from statehub.bench import dashboard, room
from statehub.bench.network import (
    LATENCY_RATE,
    LATENCY_SECONDS,
    WINDOW,
    _pipelined_writes,
    _quantile,
    _raise_file_limit,
    _Subscribers,
    paced_latency_writes,
)
from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient
from statehub.serving.state_server import StateServer

ROUNDS = 3
WRITES = 10_000
WARM_UP_WRITES = 1_000
LATENCY_SUBSCRIBERS = 10

Addresses = dict[str, tuple[str, int]]


def run() -> list[Result]:
    _raise_file_limit()
    before = os.getloadavg()[0]
    results = asyncio.run(_run_all())
    results += room.run()
    missing = dashboard.what_is_missing()
    if missing:  # the rest of the group stands without it
        print(f"statehub bench web: not measured: {missing}", file=sys.stderr)
    else:
        results += dashboard.run()
    results.append(Result("machine load average (1 min) when the group started", before, ""))
    results.append(Result("machine load average (1 min) when it ended", os.getloadavg()[0], ""))
    return results


async def _run_all() -> list[Result]:
    results: list[Result] = []
    async with _server() as addresses:
        writes = f"1 pipelining client (own process), {WINDOW} in flight"
        results += await _paired(
            [
                (f"acknowledged 1-key writes, {writes}", "writes/s", True),
                (f"server CPU per acknowledged write, {writes}", "µs", False),
            ],
            addresses,
            _writes,
        )
        where = f"{LATENCY_RATE:.0f} writes/s, {LATENCY_SUBSCRIBERS} subscribers"
        results += await _paired(
            [
                (f"write-to-subscriber latency p50, {where}", "ms", False),
                (f"write-to-subscriber latency p99, {where}", "ms", False),
            ],
            addresses,
            _latency,
        )
    return results


@asynccontextmanager
async def _server() -> AsyncIterator[Addresses]:
    server = StateServer(address="127.0.0.1", port=0, http_port=0)
    await server.start()
    try:
        yield {
            "gRPC": (f"statehub+grpc://127.0.0.1:{server.grpc_port}", server.grpc_port),
            "WebSocket": (f"ws://127.0.0.1:{server.http_port}", server.http_port),
        }
    finally:
        await server.stop()


async def _paired(
    workloads: list[tuple[str, str, bool]],
    addresses: Addresses,
    measure: Callable[[str, int], Awaitable[list[float]]],
) -> list[Result]:
    """``measure`` gives one figure per workload (name, unit, whether higher is better);
    rounds alternate between transports."""
    figures: dict[str, list[list[float]]] = {name: [] for name in addresses}
    for _ in range(ROUNDS):
        for name, (host, port) in addresses.items():
            figures[name].append(await measure(host, port))
    results = []
    for index, (workload, unit, higher_is_better) in enumerate(workloads):
        better = "higher" if higher_is_better else "lower"
        medians = {
            name: statistics.median(run[index] for run in runs) for name, runs in figures.items()
        }
        results += [
            Result(f"{workload} [{name}, median of {ROUNDS}]", median, unit)
            for name, median in medians.items()
        ]
        ratio = medians["WebSocket"] / medians["gRPC"]
        results.append(Result(f"{workload}: WebSocket / gRPC ({better} is better)", ratio, "x"))
    return results


async def _writes(host: str, port: int) -> list[float]:
    """Writes/s, and the server's CPU per write (this process's, over the whole round:
    connecting and 1,000 warm-up writes included), which a busy machine changes less.

    The writer runs in a child process: an aiohttp client and the server in one thread
    would share the GIL, where grpc's client does its I/O in threads of its own.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        cpu_before = time.process_time()
        [rate] = await loop.run_in_executor(pool, _writes_in_process, host, port)
        cpu = time.process_time() - cpu_before
    return [rate, cpu / (WARM_UP_WRITES + WRITES) * 1e6]


def _writes_in_process(host: str, port: int) -> list[float]:
    return asyncio.run(_pipelined_writes_per_second(host, port))


async def _pipelined_writes_per_second(host: str, port: int) -> list[float]:
    async with AsyncClient(host, port, reconnect=False) as writer:
        await _pipelined_writes(writer, WARM_UP_WRITES)
        started = time.perf_counter()
        await _pipelined_writes(writer, WRITES)
        return [WRITES / (time.perf_counter() - started)]


async def _latency(host: str, port: int) -> list[float]:
    async with _Subscribers(host, port, LATENCY_SUBSCRIBERS, 0.0) as watching:
        async with AsyncClient(host, port, reconnect=False) as writer:
            watching.reset()
            count = int(LATENCY_RATE * LATENCY_SECONDS / 2)
            await paced_latency_writes(writer, count)
        stats = await watching.stats(settle=0.2)
    samples = sorted(stats["latencies"])
    if not samples:
        return [float("nan"), float("nan")]
    return [_quantile(samples, 0.5), _quantile(samples, 0.99)]
