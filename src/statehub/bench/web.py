"""Web workloads: the session protocol over WebSocket next to gRPC, and NanoVer's room.

Each pair runs interleaved (gRPC, WebSocket, gRPC, ...) against one in-process server, and
the table gives the median of the rounds and the WebSocket/gRPC ratio, since the machine
is shared and noisy. Subscribers and room clients run in a child process, as in the
network group, so their decoding is not charged to the server.

The room: ``ROOM_CLIENTS`` clients each write their avatar at 30 Hz and receive the room's
changes at 30 Hz (NanoVer's multiplayer pattern), over NanoVer's WebSocket protocol or over
the session protocol on gRPC (a subscription at interval 1/30 s). The server's CPU is the
bench process's CPU time over the window (the clients are elsewhere).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection as Pipe
from typing import Any

import aiohttp
import msgpack

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
from statehub.core.values import JsonValue
from statehub.server.state_server import StateServer

ROUNDS = 3
WRITES = 10_000
LATENCY_SUBSCRIBERS = 10
ROOM_CLIENTS = 100
ROOM_RATE = 30.0
ROOM_SECONDS = 5.0
ROOM_WARM_UP = 1.0

Addresses = dict[str, tuple[str, int]]


def run() -> list[Result]:
    _raise_file_limit()
    return asyncio.run(_run_all())


async def _run_all() -> list[Result]:
    results: list[Result] = []
    async with _server() as (server, addresses):
        results += await _paired(
            [f"acknowledged 1-key writes, 1 pipelining client (own process), {WINDOW} in flight"],
            "writes/s",
            addresses,
            _writes,
        )
        where = f"{LATENCY_RATE:.0f} writes/s, {LATENCY_SUBSCRIBERS} subscribers"
        results += await _paired(
            [
                f"write-to-subscriber latency p50, {where}",
                f"write-to-subscriber latency p99, {where}",
            ],
            "ms",
            addresses,
            _latency,
            higher_is_better=False,
        )
        results += await _room(server, addresses)
    return results


@asynccontextmanager
async def _server() -> AsyncIterator[tuple[StateServer, Addresses]]:
    server = StateServer(address="127.0.0.1", port=0, http_port=0)
    await server.start()
    try:
        yield (
            server,
            {
                "gRPC": ("127.0.0.1", server.port),
                "WebSocket": (f"ws://127.0.0.1:{server.http_port}", server.http_port),
            },
        )
    finally:
        await server.stop()


async def _paired(
    workloads: list[str],
    unit: str,
    addresses: Addresses,
    measure: Callable[[str, int], Awaitable[list[float]]],
    higher_is_better: bool = True,
) -> list[Result]:
    """``measure`` gives one figure per workload; rounds alternate between transports."""
    figures: dict[str, list[list[float]]] = {name: [] for name in addresses}
    for _ in range(ROUNDS):
        for name, (host, port) in addresses.items():
            figures[name].append(await measure(host, port))
    better = "higher" if higher_is_better else "lower"
    results = []
    for index, workload in enumerate(workloads):
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
    """In a child process: an aiohttp client and the server in one thread would share the
    GIL, where grpc's client does its I/O in threads of its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, _writes_in_process, host, port)


def _writes_in_process(host: str, port: int) -> list[float]:
    return asyncio.run(_pipelined_writes_per_second(host, port))


async def _pipelined_writes_per_second(host: str, port: int) -> list[float]:
    async with AsyncClient(host, port, reconnect=False) as writer:
        await _pipelined_writes(writer, 1_000)  # warm up
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


# -- the room ------------------------------------------------------------------------


async def _room(server: StateServer, addresses: Addresses) -> list[Result]:
    results: list[Result] = []
    targets = {
        "NanoVer WebSocket": ("nanover", f"ws://127.0.0.1:{server.http_port}/", 0),
        "session protocol, gRPC": ("session", *addresses["gRPC"]),
        "session protocol, WebSocket": ("session", *addresses["WebSocket"]),
    }
    for name, (mode, host, port) in targets.items():
        stats = await _run_room(mode, host, port)
        rates = sorted(stats["rates"])
        where = f"{ROOM_CLIENTS} clients writing their avatar at {ROOM_RATE:.0f} Hz, {name}"
        results += [
            Result(
                f"room: updates received per client, median ({where})", rates[len(rates) // 2], "/s"
            ),
            Result(f"room: updates received per client, slowest ({where})", rates[0], "/s"),
            Result(f"room: avatars per update, median ({where})", stats["avatars"], "keys"),
            Result(f"room: server CPU ({where})", stats["cpu"] * 100, "% of a core"),
            Result(
                f"room: clients' CPU, one process ({where})",
                stats["client_cpu"] * 100,
                "% of a core",
            ),
        ]
    return results


async def _run_room(mode: str, host: str, port: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_room_process, args=(mode, host, port, child), daemon=True)
    process.start()
    loop = asyncio.get_running_loop()
    try:
        ready = await loop.run_in_executor(None, parent.recv)
        if ready[0] != "ready":
            raise RuntimeError(f"room clients failed: {ready[1]}")
        cpu_before = time.process_time()
        started = time.perf_counter()
        parent.send(("measure",))
        reply = await loop.run_in_executor(None, parent.recv)
        cpu = (time.process_time() - cpu_before) / (time.perf_counter() - started)
        if reply[0] != "stats":
            raise RuntimeError(f"room clients failed: {reply[1]}")
        stats: dict[str, Any] = reply[1]
        stats["cpu"] = cpu
        return stats
    finally:
        await loop.run_in_executor(None, process.join, 30)
        if process.is_alive():
            process.kill()
        parent.close()


def _room_process(mode: str, host: str, port: int, pipe: Pipe) -> None:
    _raise_file_limit()
    try:
        asyncio.run(_room_clients(mode, host, port, pipe))
    except Exception as error:
        pipe.send(("error", f"{type(error).__name__}: {error}"))


async def _room_clients(mode: str, host: str, port: int, pipe: Pipe) -> None:
    counting = [False]
    received = [0] * ROOM_CLIENTS
    avatars: list[int] = []
    run_client = _nanover_client if mode == "nanover" else _session_client
    ready = [asyncio.Event() for _ in range(ROOM_CLIENTS)]

    def got(index: int, keys: int) -> None:
        if counting[0]:
            received[index] += 1
            if len(avatars) < 100_000:
                avatars.append(keys)

    async with aiohttp.ClientSession() as http:
        tasks = [
            asyncio.create_task(run_client(http, host, port, index, got, ready[index]))
            for index in range(ROOM_CLIENTS)
        ]
        waiting = asyncio.ensure_future(_all_set(ready))
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                task.result()
        pipe.send(("ready",))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, pipe.recv)
        await asyncio.sleep(ROOM_WARM_UP)
        counting[0] = True
        cpu_before = time.process_time()
        await asyncio.sleep(ROOM_SECONDS)
        client_cpu = (time.process_time() - cpu_before) / ROOM_SECONDS
        counting[0] = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(
        (
            "stats",
            {
                "rates": [count / ROOM_SECONDS for count in received],
                "avatars": statistics.median(avatars) if avatars else 0,
                "client_cpu": client_cpu,
            },
        )
    )


async def _all_set(events: list[asyncio.Event]) -> None:
    for event in events:
        await event.wait()


async def _write_avatar_at_rate(write: Callable[[int], Awaitable[None]]) -> None:
    period = 1 / ROOM_RATE
    started = time.monotonic()
    frame = 0
    while True:
        await write(frame)
        frame += 1
        delay = started + frame * period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _avatar(index: int, frame: int) -> dict[str, Any]:
    return {
        "playerid": f"u{index}",
        "components": [{"name": "head", "position": [index * 0.1, 1.6, frame * 0.001]}],
    }


async def _nanover_client(
    http: aiohttp.ClientSession,
    host: str,
    port: int,
    index: int,
    got: Callable[[int, int], None],
    ready: asyncio.Event,
) -> None:
    async with http.ws_connect(host, max_msg_size=0) as socket:

        async def write(frame: int) -> None:
            updates: dict[str, JsonValue] = {
                f"avatar.u{index}": _avatar(index, frame),
                f"update.index.u{index}": frame,
            }
            await socket.send_bytes(msgpack.packb({"state": {"updates": updates}}))

        writer = asyncio.create_task(_write_avatar_at_rate(write))
        ready.set()
        try:
            async for message in socket:
                state = msgpack.unpackb(message.data).get("state")
                if state is not None:
                    got(index, len(state["updates"]))
        finally:
            writer.cancel()


async def _session_client(
    http: aiohttp.ClientSession,
    host: str,
    port: int,
    index: int,
    got: Callable[[int, int], None],
    ready: asyncio.Event,
) -> None:
    async with AsyncClient(host, port, reconnect=False, connect_timeout=60) as client:

        async def write(frame: int) -> None:
            updates: dict[str, JsonValue] = {
                f"avatar.u{index}": _avatar(index, frame),
                f"update.index.u{index}": frame,
            }
            await client.update(updates)

        # Count batches as they arrive (as the NanoVer client does), not as a ChangeStream
        # consumer takes them: that one coalesces again whenever its task runs late.
        connection = await client._connection()
        await connection.subscribe(
            1 / ROOM_RATE, "", lambda batch: got(index, len(batch["updates"]))
        )
        writer = asyncio.create_task(_write_avatar_at_rate(write))
        ready.set()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            writer.cancel()
