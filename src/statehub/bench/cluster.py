"""Cluster workloads: statehub servers over one Redis, next to one in-memory server.

Every server is a ``statehub serve`` process (the in-memory one too, so both sides pay
the same process and gRPC costs); Redis is a redis-server without persistence started
for the run. Writers and the measuring loop share this process; subscribers run in
child processes (``network._Subscribers``), one per server they watch.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from statehub.bench import fleet
from statehub.bench.network import (
    LATENCY_RATE,
    LATENCY_SECONDS,
    _pipelined_writes,
    _quantile,
    _raise_file_limit,
    _Subscribers,
    paced_latency_writes,
)
from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient

WRITES = 10_000
FAN_OUT_SUBSCRIBERS = 100
FAN_OUT_WRITES = 3_000
HOST = "127.0.0.1"
#: Sequential ``endpoint.get`` calls timed per row of the command round-trip workload.
CALLS = 500
#: The endpoint served by the first server of each kind (memory, and Redis server A).
ENDPOINT_CONFIG = """
name: bench
endpoints:
  - name: value
    module: kv_store_key
    initial_value: 1
"""


def run() -> list[Result]:
    """Run every cluster workload and return the table rows."""
    _raise_file_limit()
    with _servers() as (memory_port, redis_ports):
        return asyncio.run(_run_all(memory_port, redis_ports))


@contextmanager
def _servers() -> Iterator[tuple[int, list[int]]]:
    processes: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="statehub-bench-") as directory:
        redis_process = fleet.start_redis(Path(directory) / "redis")
        config = Path(directory) / "endpoints.yaml"
        config.write_text(ENDPOINT_CONFIG)
        endpoints = ("--config", str(config))
        try:
            memory, memory_port = fleet.start_serve(*endpoints)
            processes.append(memory)
            ports = []
            for index in range(3):
                process, port = fleet.start_statehub(
                    redis_process.url, *(endpoints if index == 0 else ())
                )
                processes.append(process)
                ports.append(port)
            yield memory_port, ports
        finally:
            for process in processes:
                fleet.stop(process)
            fleet.stop(redis_process.process)


async def _run_all(memory_port: int, redis_ports: list[int]) -> list[Result]:
    a, b, _ = redis_ports
    return [
        await _writes([memory_port], "memory, 1 server"),
        await _writes([a], "Redis, 1 server"),
        await _writes(redis_ports, "Redis, 3 servers (one writer on each)"),
        *await _latency(memory_port, memory_port, "memory, same server"),
        *await _latency(a, b, "Redis, written on A, subscribed on B"),
        await _fan_out([memory_port], "memory, 1 server"),
        await _fan_out([a], "Redis, all on 1 server"),
        await _fan_out(redis_ports, "Redis, spread over 3 servers"),
        *await _call_round_trip(memory_port, "memory, 1 server"),
        *await _call_round_trip(a, "Redis, client on the server holding the endpoint"),
        *await _call_round_trip(b, "Redis, endpoint on server A, client on B"),
    ]


async def _writes(ports: list[int], where: str) -> Result:
    writers = [AsyncClient(HOST, port, reconnect=False) for port in ports]
    try:
        for writer in writers:
            await writer.connect()
            await _pipelined_writes(writer, 500)  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(_pipelined_writes(writer, WRITES) for writer in writers))
        elapsed = time.perf_counter() - started
    finally:
        for writer in writers:
            await writer.close()
    return Result(
        f"acknowledged 1-key writes, 512 in flight per writer ({where})",
        WRITES * len(ports) / elapsed,
        "writes/s",
    )


async def _latency(write_port: int, watch_port: int, where: str) -> list[Result]:
    async with _Subscribers(HOST, watch_port, 1, 0.0) as watching:
        async with AsyncClient(HOST, write_port, reconnect=False) as writer:
            watching.reset()
            count = int(LATENCY_RATE * LATENCY_SECONDS)
            await paced_latency_writes(writer, count)
        stats = await watching.stats(settle=0.2)
    samples = sorted(stats["latencies"])
    label = f"write-to-subscriber latency at {LATENCY_RATE:.0f} writes/s ({where})"
    if not samples:
        return [Result(label, float("nan"), "ms")]
    return [
        Result(f"{label} p50", _quantile(samples, 0.5), "ms"),
        Result(f"{label} p99", _quantile(samples, 0.99), "ms"),
    ]


async def _call_round_trip(port: int, where: str) -> list[Result]:
    """Sequential ``endpoint.get`` calls: one round trip each, forwarded or not."""
    samples = []
    async with AsyncClient(HOST, port, reconnect=False) as caller:
        for _ in range(50):  # warm up (and B's directory knows A's endpoint)
            await caller.endpoint_get("bench.value")
        for _ in range(CALLS):
            started = time.perf_counter()
            await caller.endpoint_get("bench.value")
            samples.append(time.perf_counter() - started)
    samples.sort()
    label = f"endpoint.get round trip, one call at a time ({where})"
    return [
        Result(f"{label} p50", _quantile(samples, 0.5), "ms"),
        Result(f"{label} p99", _quantile(samples, 0.99), "ms"),
    ]


async def _fan_out(ports: list[int], where: str) -> Result:
    per_server = [
        FAN_OUT_SUBSCRIBERS // len(ports) + (1 if i < FAN_OUT_SUBSCRIBERS % len(ports) else 0)
        for i in range(len(ports))
    ]
    groups = [
        _Subscribers(HOST, port, count, 0.0) for port, count in zip(ports, per_server, strict=True)
    ]
    for group in groups:
        await group.__aenter__()
    try:
        async with AsyncClient(HOST, ports[0], reconnect=False) as writer:
            for group in groups:
                group.reset()
            started = time.perf_counter()
            await _pipelined_writes(writer, FAN_OUT_WRITES)
            elapsed = time.perf_counter() - started
        batches = 0
        for group in groups:
            batches += (await group.stats(settle=0.2))["batches"]
    finally:
        for group in groups:
            await group.__aexit__(None, None, None)
    return Result(
        f"fan-out: {FAN_OUT_SUBSCRIBERS} subscribers at interval 0, writer at full speed ({where})",
        batches / elapsed,
        "deliveries/s",
    )
