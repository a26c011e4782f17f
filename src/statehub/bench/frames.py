"""NanoVer frames: a simulation runner publishing a 10,000-atom frame at 30 Hz to a room.

A runner (a NanoVer WebSocket client, as ``nanover-server --remote`` is) publishes a frame
of ``ATOMS`` particle positions (packed float32, 120 KB) and a few small keys 30 times a
second to a fresh ``statehub serve``, and with each frame a state update (the simulation's
time, as a runner's ``playback``/``imd`` keys change); 20, then 100 NanoVer clients (issue
20's room), in ``PROCESSES`` worker processes, count the frame and state messages they
receive. Figures over the measured window: frame messages/s and state messages/s for the
median and the slowest client; the server's CPU as a share of one core, in all and per
client, and the share of the window it waited for a CPU; the client processes' CPU; and
the CPU each side spent per frame message delivered (server) or received (clients), which
says what the machine could sustain whatever else runs on it. A frame is counted only if
it carries the whole ``particle.positions`` array (found in the message's bytes, not
decoded: a headset's rendering is not what is measured).
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any, NamedTuple

import aiohttp
import msgpack

from statehub.bench.room import (
    REPLY_TIMEOUT,
    _shares,
    client_workers,
    process_cpu_seconds,
    run_queue_seconds,
    serve,
)
from statehub.bench.table import Result

ATOMS = 10_000
CLIENTS = (20, 100)
PROCESSES = 2
RATE = 30.0
SECONDS = 5.0
WARM_UP = 1.5
#: How the relay packs a frame message: ``{"frame": {...}}``.
_FRAME_HEADER = b"\x81\xa5frame"
#: How the NanoVer edge packs a state message: ``{"state": {...}}``.
_STATE_HEADER = b"\x81\xa5state"
#: The positions' key (a fixstr) and the header of their value (a bin32 of 12 bytes/atom).
_POSITIONS = b"\xb2particle.positions\xc6"
_POSITIONS_BYTES = struct.pack(">I", 12 * ATOMS)


def run(clients: tuple[int, ...] = CLIENTS, seconds: float = SECONDS) -> list[Result]:
    """A room run per number of ``clients``."""
    return [result for count in clients for result in run_room(count, seconds)]


def run_room(clients: int, seconds: float) -> list[Result]:
    """One room run: frames/s and state updates/s per client (median, slowest), the
    server's and the clients' CPU."""
    with (
        serve() as served,
        client_workers(
            _worker_process, [(served.http_port, count) for _, count in _shares(clients, PROCESSES)]
        ) as workers,
    ):
        start = time.monotonic() + WARM_UP
        end = start + seconds
        workers.measure(start, end)
        server = asyncio.run(_publish(served.http_port, served.process.pid, start, end))
        reports = workers.reports()
    frames = [frame_rate for report in reports for frame_rate, _ in report["rates"]]
    states = [state_rate for report in reports for _, state_rate in report["rates"]]
    clients_cpu = sum(report["cpu"] for report in reports)
    delivered = sum(frames) or float("nan")  # frame messages per second, all clients
    where = f"{clients} clients, a {ATOMS:,}-atom frame published at {RATE:g} Hz"
    return [
        Result(f"frames: received per client, median ({where})", statistics.median(frames), "/s"),
        Result(f"frames: received per client, slowest ({where})", min(frames), "/s"),
        Result(f"state updates: per client, median ({where})", statistics.median(states), "/s"),
        Result(f"state updates: per client, slowest ({where})", min(states), "/s"),
        Result(f"frames: server CPU ({where})", server.cpu * 100, "% of a core"),
        Result(
            f"frames: server CPU per client ({where})", server.cpu * 100 / clients, "% of a core"
        ),
        Result(
            f"frames: server waiting for a CPU ({where})", server.waiting * 100, "% of the time"
        ),
        Result(
            f"frames: clients' CPU, {PROCESSES} processes ({where})",
            clients_cpu * 100,
            "% of a core",
        ),
        Result(
            f"frames: server CPU per frame delivered ({where})", server.cpu / delivered * 1e6, "us"
        ),
        Result(
            f"frames: clients' CPU per frame received ({where})",
            clients_cpu / delivered * 1e6,
            "us",
        ),
    ]


class _ServerUse(NamedTuple):
    cpu: float  # share of one core over the window
    waiting: float  # share of the window its loop thread was ready to run but had no CPU


async def _publish(port: int, server_pid: int, start: float, end: float) -> _ServerUse:
    """Publish frames at ``RATE`` until ``end``; the server's use of a CPU in [start, end]."""
    positions = struct.pack(f"<{3 * ATOMS}f", *([0.5] * (3 * ATOMS)))
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{port}/", max_msg_size=0) as socket,
    ):
        # The runner is a NanoVer client too: the frames and state relayed back to it are
        # read (and dropped), or after the edge's unread timeout the server drops it.
        reading = asyncio.ensure_future(_drain(socket))
        try:
            return await _publish_on(socket, positions, server_pid, start, end)
        finally:
            reading.cancel()


async def _drain(socket: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in socket:
        pass


async def _publish_on(
    socket: aiohttp.ClientWebSocketResponse,
    positions: bytes,
    server_pid: int,
    start: float,
    end: float,
) -> _ServerUse:
    cpu_before = waited_before = opened = 0.0
    index = 0
    due = time.monotonic()
    while True:
        now = time.monotonic()
        if not opened and now >= start:
            opened, cpu_before = now, process_cpu_seconds(server_pid)
            waited_before = run_queue_seconds(server_pid)
        if now >= end:
            window = now - opened
            return _ServerUse(
                (process_cpu_seconds(server_pid) - cpu_before) / window,
                (run_queue_seconds(server_pid) - waited_before) / window,
            )
        frame: dict[str, Any] = {"frame.index": index, "particle.positions": positions}
        if index == 0:
            frame["particle.count"] = ATOMS
        await socket.send_bytes(msgpack.packb({"frame": frame}))
        simulation = {"updates": {"simulation.time": index / RATE}, "removals": []}
        await socket.send_bytes(msgpack.packb({"state": simulation}))
        index += 1
        due += 1 / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))


def _worker_process(port: int, count: int, pipe: Pipe) -> None:
    asyncio.run(_worker(port, count, pipe))


async def _worker(port: int, count: int, pipe: Pipe) -> None:
    frames = [0] * count
    states = [0] * count
    window = [0.0, float("inf")]

    async def client(slot: int, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(f"ws://127.0.0.1:{port}/", max_msg_size=0) as socket:
            connected.release()
            async for message in socket:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    continue
                if not window[0] <= time.monotonic() < window[1]:
                    continue
                data = message.data
                if data.startswith(_FRAME_HEADER):
                    frames[slot] += carries_positions(data)
                elif data.startswith(_STATE_HEADER):
                    states[slot] += 1

    connected = asyncio.Semaphore(0)
    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.ensure_future(client(slot, http)) for slot in range(count)]
        for _ in range(count):
            await asyncio.wait_for(connected.acquire(), REPLY_TIMEOUT)
        pipe.send(("ready",))
        loop = asyncio.get_running_loop()
        _, start, end = await loop.run_in_executor(None, pipe.recv)
        window[:] = [start, end]
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        cpu_before = time.process_time()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        cpu = time.process_time() - cpu_before
        await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    seconds = end - start
    rates = [(f / seconds, s / seconds) for f, s in zip(frames, states, strict=True)]
    pipe.send(("stats", {"rates": rates, "cpu": cpu / seconds}))


def carries_positions(message: bytes) -> bool:
    """Whether a frame message holds all ``ATOMS`` positions (their key, their length, and
    as many bytes after them): the frame's particle data arrived whole."""
    at = message.find(_POSITIONS)
    if at < 0:
        return False
    length_at = at + len(_POSITIONS)
    return (
        message[length_at : length_at + 4] == _POSITIONS_BYTES
        and len(message) >= length_at + 4 + 12 * ATOMS
    )
