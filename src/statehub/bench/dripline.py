"""The dripline workload: OP_GET request/reply round trips over a RabbitMQ broker, next to
the same endpoint get over statehub's own protocol (gRPC), in the same run.

The server and its mesh service run in this process; both clients run in a child
process (their own loop), so the client's work is not charged to the server, as on a
real mesh where clients are other programs. All on loopback. The broker is a throwaway
one started here (``TemporaryBroker``), or the one at ``$STATEHUB_BENCH_DRIPLINE_BROKER``.
Rounds of both protocols are interleaved and each figure is the median over the rounds,
so a noisy neighbour on a shared machine hits both alike.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from multiprocessing.connection import Connection as Pipe
from typing import Any

from statehub.bench.table import Result

BROKER_VARIABLE = "STATEHUB_BENCH_DRIPLINE_BROKER"
ROUNDS = 3
SEQUENTIAL = 1_000
PARALLEL = 5_000
IN_FLIGHT = 32
CONFIG = "name: bench\nendpoints:\n  - {name: reading, initial_value: 0.5, calibration: '2*{}'}\n"

Call = Callable[[], Awaitable[object]]


def run() -> list[Result]:
    """Run the workload and return the table rows."""
    try:
        from statehub.dripline.broker import BrokerUnavailable, TemporaryBroker
    except ImportError:
        return [Result("dripline: skipped (pip install 'statehub[dripline]')", float("nan"), "-")]
    url = os.environ.get(BROKER_VARIABLE)
    if url is not None:
        return asyncio.run(_run_all(url))
    try:
        broker = TemporaryBroker()
    except BrokerUnavailable as error:
        return [Result(f"dripline: skipped ({error})", float("nan"), "-")]
    with broker:
        return asyncio.run(_run_all(broker.url))


async def _run_all(url: str) -> list[Result]:
    """Serve the endpoint on the mesh and on gRPC here; measure from a child process."""
    from statehub.dripline.mesh import MeshService
    from statehub.dripline.settings import mesh_settings
    from statehub.endpoints.attach import endpoints_running
    from statehub.endpoints.config import parse_config
    from statehub.serving.state_server import StateServer

    settings = mesh_settings(url)
    server = StateServer(address="127.0.0.1", port=0)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(server)
        service = await stack.enter_async_context(
            endpoints_running(server, parse_config(CONFIG, "bench.yaml"))
        )
        mesh = await stack.enter_async_context(MeshService(service, settings))
        await mesh.wait_connected(60)
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=_clients, args=(url, server.port, child), daemon=True)
        process.start()
        try:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(None, _receive, parent, process)
        finally:
            await loop.run_in_executor(None, process.join, 60)
            if process.is_alive():
                process.kill()
    if outcome[0] != "figures":
        raise RuntimeError(f"the client process failed: {outcome[1]}")
    return _rows(outcome[1], list(CONTENDERS))


#: The two ways to get the endpoint, as named in the table.
CONTENDERS = (
    "dripline OP_GET over RabbitMQ",
    "statehub endpoint get over its own protocol (gRPC)",
)

Figures = dict[tuple[str, int], list[tuple[float, float, float]]]


def _receive(pipe: Pipe, process: Any) -> Any:
    while not pipe.poll(0.2):
        if not process.is_alive():
            return ("error", f"it exited with code {process.exitcode}")
    return pipe.recv()


def _clients(url: str, port: int, pipe: Pipe) -> None:
    """The child process: both clients, rounds interleaved; sends back the figures."""
    try:
        pipe.send(("figures", asyncio.run(_measure_all(url, port))))
    except Exception as error:
        pipe.send(("error", f"{type(error).__name__}: {error}"))


async def _measure_all(url: str, port: int) -> Figures:
    from statehub.client.async_client import AsyncClient
    from statehub.dripline.client import AsyncDriplineClient

    async with (
        AsyncDriplineClient(url) as dripline,
        AsyncClient("127.0.0.1", port, reconnect=False) as own,
    ):

        async def dripline_get() -> object:
            return await dripline.get("reading")

        async def own_get() -> object:
            return await own.endpoint_get("bench.reading")

        calls = dict(zip(CONTENDERS, (dripline_get, own_get), strict=True))
        for call in calls.values():  # warm up connections and caches
            await _measure(call, 200, IN_FLIGHT)
        figures: Figures = {}
        for _ in range(ROUNDS):
            for name, call in calls.items():
                for in_flight, count in ((1, SEQUENTIAL), (IN_FLIGHT, PARALLEL)):
                    figures.setdefault((name, in_flight), []).append(
                        await _measure(call, count, in_flight)
                    )
    return figures


async def _measure(call: Call, count: int, in_flight: int) -> tuple[float, float, float]:
    """``(round trips/s, p50 ms, p99 ms)`` of ``count`` calls, ``in_flight`` at a time."""
    latencies: list[float] = []

    async def worker(calls: int) -> None:
        for _ in range(calls):
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    share, extra = divmod(count, in_flight)
    started = time.perf_counter()
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(in_flight)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return count / elapsed, _quantile(latencies, 0.5), _quantile(latencies, 0.99)


def _quantile(sorted_samples: list[float], q: float) -> float:
    index = min(len(sorted_samples) - 1, round(q * (len(sorted_samples) - 1)))
    return sorted_samples[index] * 1000


def _rows(figures: Figures, names: list[str]) -> list[Result]:
    rows: list[Result] = []
    medians: dict[tuple[str, int], float] = {}
    for (name, in_flight), runs in figures.items():
        how = "sequential" if in_flight == 1 else f"{in_flight} in flight"
        rate = statistics.median(run[0] for run in runs)
        medians[name, in_flight] = rate
        rows.append(Result(f"{name}, {how}: round trips", rate, "/s"))
        rows.append(Result(f"{name}, {how}: p50", statistics.median(r[1] for r in runs), "ms"))
        rows.append(Result(f"{name}, {how}: p99", statistics.median(r[2] for r in runs), "ms"))
    dripline, own = names
    for in_flight in (1, IN_FLIGHT):
        how = "sequential" if in_flight == 1 else f"{in_flight} in flight"
        ratio = medians[own, in_flight] / medians[dripline, in_flight]
        rows.append(Result(f"own protocol / dripline round trips, {how}", ratio, "x"))
    return rows
