"""The dripline workload: OP_GET request/reply round trips over a RabbitMQ broker, next to
the same endpoint get over statehub's own protocol (gRPC), in the same run.

Server, mesh service and clients share this process and its loop (as in the network
group), on loopback. The broker is a throwaway one started here (``TemporaryBroker``),
or the one at ``$STATEHUB_BENCH_DRIPLINE_BROKER``. Rounds of both protocols are
interleaved and each figure is the median over the rounds, so a noisy neighbour on a
shared machine hits both alike.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

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
    from statehub.client.async_client import AsyncClient
    from statehub.dripline.client import AsyncDriplineClient
    from statehub.dripline.mesh import MeshService
    from statehub.dripline.settings import mesh_settings
    from statehub.endpoints.attach import endpoints_running
    from statehub.endpoints.config import parse_config
    from statehub.server.state_server import StateServer

    settings = mesh_settings(url)
    server = StateServer(address="127.0.0.1", port=0)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(server)
        service = await stack.enter_async_context(
            endpoints_running(server, parse_config(CONFIG, "bench.yaml"))
        )
        mesh = await stack.enter_async_context(MeshService(service, settings))
        await mesh.wait_connected(60)
        dripline = await stack.enter_async_context(AsyncDriplineClient(settings=settings))
        own = await stack.enter_async_context(
            AsyncClient("127.0.0.1", server.port, reconnect=False)
        )

        async def dripline_get() -> object:
            return await dripline.get("reading")

        async def own_get() -> object:
            return await own.endpoint_get("bench.reading")

        contenders = {
            "dripline OP_GET over RabbitMQ": dripline_get,
            "statehub endpoint get over its own protocol (gRPC)": own_get,
        }
        for call in contenders.values():  # warm up connections, caches, JIT-free paths
            await _measure(call, 200, IN_FLIGHT)
        figures: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for _ in range(ROUNDS):
            for name, call in contenders.items():
                for in_flight, count in ((1, SEQUENTIAL), (IN_FLIGHT, PARALLEL)):
                    figures.setdefault((name, in_flight), []).append(
                        await _measure(call, count, in_flight)
                    )
    return _rows(figures, list(contenders))


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


def _rows(
    figures: dict[tuple[str, int], list[tuple[float, float, float]]], names: list[str]
) -> list[Result]:
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
