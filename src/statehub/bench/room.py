"""NanoVer's multiplayer room: many clients each writing its avatar at 30 Hz.

``CLIENTS`` clients each write their avatar (``avatar.<id>`` and ``update.index.<id>``) at
30 Hz and receive the room's changes at 30 Hz, over NanoVer's WebSocket protocol at ``/``
of the web port, or over the session protocol (a subscription at interval 1/30 s) on gRPC
or WebSocket. The server is a ``statehub serve`` process of its own, started afresh for
each run; the clients are spread over ``PROCESSES`` worker processes, so that what limits
the room (the server or the clients) shows in the figures:

- per-client received updates/s over the measured window (median and slowest client);
- the server process's CPU over the same window, read from ``/proc/<pid>/stat`` (its
  threads included), as a share of one core;
- each worker process's own CPU over the window (the total and the busiest);
- how long the server's event-loop thread was ready to run but waited for a CPU (its run
  queue wait, ``/proc/<pid>/task/<pid>/schedstat``), as a share of the window: on a
  machine busy with other work that, not statehub, is what holds a room back.

The window is agreed in ``time.monotonic()`` (CLOCK_MONOTONIC, shared by the processes of
one machine). Clients do as little as they can besides what is measured: a NanoVer client
reads only the header of each state message (how many keys it updates), not its values.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any, Literal

import aiohttp
import msgpack

from statehub.bench.fleet import start_serve_ports, stop
from statehub.bench.network import _raise_file_limit
from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient
from statehub.core.values import JsonValue

CLIENTS = 100
PROCESSES = 4
RATE = 30.0
SECONDS = 5.0
WARM_UP = 1.0
ROUNDS = 3
#: Seconds a worker may take to connect its clients, or to report after the window.
REPLY_TIMEOUT = 120.0

Mode = Literal["nanover", "session-grpc", "session-websocket"]
MODES: dict[Mode, str] = {
    "nanover": "NanoVer WebSocket",
    "session-grpc": "session protocol, gRPC",
    "session-websocket": "session protocol, WebSocket",
}

#: How the server's NanoVer edge packs a delta: ``{"state": {"updates": {...}, "removals":
#: [...]}}`` (msgpack: a 1-entry map, "state", a 2-entry map, "updates"); the map header of
#: the updates follows.
_STATE_HEADER = b"\x81\xa5state\x82\xa7updates"
_FIXMAP, _MAP16, _MAP32 = 0x80, 0xDE, 0xDF


@dataclass(frozen=True)
class Served:
    """A ``statehub serve`` process and its ports."""

    process: subprocess.Popen[str]
    grpc_port: int
    http_port: int


@dataclass(frozen=True)
class RoomRun:
    """What one run of the room measured."""

    rates: list[float]  # received updates/s, one per client
    avatars_per_update: float  # median keys per update received
    server_cpu: float  # share of one core
    server_waiting: float  # share of the window its loop thread waited for a CPU
    client_cpu: list[float]  # share of one core, one per worker process


def run(rounds: int = ROUNDS, modes: Iterable[Mode] = tuple(MODES)) -> list[Result]:
    """The room over each protocol, in interleaved rounds; medians of the rounds."""
    _raise_file_limit()
    runs: dict[Mode, list[RoomRun]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in runs:
            runs[mode].append(run_room(mode))
    results = []
    for mode, mode_runs in runs.items():
        results += _rows(MODES[mode], mode_runs)
    return results


def _rows(name: str, runs: list[RoomRun]) -> list[Result]:
    def median(figure: Callable[[RoomRun], float]) -> float:
        return statistics.median(figure(run) for run in runs)

    where = f"{CLIENTS} clients, avatar at {RATE:.0f} Hz, {name}, median of {len(runs)}"
    return [
        Result(
            f"room: updates received per client, median client ({where})",
            median(lambda run: statistics.median(run.rates)),
            "/s",
        ),
        Result(
            f"room: updates received per client, slowest client ({where})",
            median(lambda run: min(run.rates)),
            "/s",
        ),
        Result(
            f"room: avatars per update, median ({where})",
            median(lambda run: run.avatars_per_update),
            "keys",
        ),
        Result(
            f"room: server CPU, statehub serve process ({where})",
            median(lambda run: run.server_cpu * 100),
            "% of a core",
        ),
        Result(
            f"room: server's loop thread waiting for a CPU, share of the time ({where})",
            median(lambda run: run.server_waiting * 100),
            "%",
        ),
        Result(
            f"room: clients' CPU, all {PROCESSES} processes ({where})",
            median(lambda run: sum(run.client_cpu) * 100),
            "% of a core",
        ),
        Result(
            f"room: clients' CPU, busiest of {PROCESSES} processes ({where})",
            median(lambda run: max(run.client_cpu) * 100),
            "% of a core",
        ),
    ]


def run_room(
    mode: Mode,
    *,
    clients: int = CLIENTS,
    processes: int = PROCESSES,
    seconds: float = SECONDS,
    warm_up: float = WARM_UP,
) -> RoomRun:
    """One run of the room on a fresh ``statehub serve``, clients in ``processes`` workers."""
    with (
        serve() as served,
        client_workers(
            _worker_process,
            [
                (mode, served.grpc_port, served.http_port, first, count, clients)
                for first, count in _shares(clients, processes)
            ],
        ) as workers,
    ):
        start = time.monotonic() + warm_up
        end = start + seconds
        workers.measure(start, end)
        time.sleep(max(0.0, start - time.monotonic()))
        pid = served.process.pid
        cpu_before, waited_before = process_cpu_seconds(pid), run_queue_seconds(pid)
        opened = time.monotonic()
        time.sleep(max(0.0, end - time.monotonic()))
        cpu_after, waited_after = process_cpu_seconds(pid), run_queue_seconds(pid)
        closed = time.monotonic()
        reports = workers.reports()
    samples = [sample for report in reports for sample in report["avatars"]]
    return RoomRun(
        rates=[rate for report in reports for rate in report["rates"]],
        avatars_per_update=statistics.median(samples) if samples else 0.0,
        server_cpu=(cpu_after - cpu_before) / (closed - opened),
        server_waiting=(waited_after - waited_before) / (closed - opened),
        client_cpu=[report["cpu"] for report in reports],
    )


class ClientWorkers:
    """Worker processes running a benchmark's clients, each answering over its pipe: "ready"
    once its clients are connected, then its "stats" after the measured window."""

    def __init__(self, workers: list[tuple[Any, Pipe]]) -> None:
        self._workers = workers

    def measure(self, start: float, end: float) -> None:
        """Tell every worker the window to measure (monotonic times)."""
        for _, pipe in self._workers:
            pipe.send(("measure", start, end))

    def reports(self) -> list[Any]:
        """Each worker's stats, once its window has passed."""
        return [_expect(_receive(worker, pipe), "stats") for worker, pipe in self._workers]


@contextmanager
def client_workers(
    target: Callable[..., None], arguments: list[tuple[Any, ...]]
) -> Iterator[ClientWorkers]:
    """A spawned process per item of ``arguments`` running ``target(*item, pipe)``, all
    ready when the block starts; joined (or killed) when it ends."""
    context = multiprocessing.get_context("spawn")
    workers: list[tuple[Any, Pipe]] = []
    try:
        for items in arguments:
            parent, child = context.Pipe()
            worker = context.Process(target=target, args=(*items, child), daemon=True)
            worker.start()
            child.close()
            workers.append((worker, parent))
        for worker, pipe in workers:
            _expect(_receive(worker, pipe), "ready")
        yield ClientWorkers(workers)
    finally:
        for worker, pipe in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join()
            pipe.close()


def _shares(clients: int, processes: int) -> list[tuple[int, int]]:
    """(first client index, client count) for each worker, as even as can be."""
    processes = max(1, min(processes, clients))
    size, extra = divmod(clients, processes)
    shares, first = [], 0
    for number in range(processes):
        count = size + (1 if number < extra else 0)
        shares.append((first, count))
        first += count
    return shares


@contextmanager
def serve() -> Iterator[Served]:
    """``statehub serve --port 0`` (memory store, web edge on a free port) until the end."""
    process, ports = start_serve_ports()
    try:
        if ports.http is None:
            raise RuntimeError("statehub serve started no web edge")
        yield Served(process, ports.grpc, ports.http)
    finally:
        stop(process)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, every thread included."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) is in parentheses and may hold spaces: split after it.
        fields = stat.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def run_queue_seconds(pid: int) -> float:
    """Seconds the main thread of process ``pid`` has spent ready to run, waiting for a CPU."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[1]) / 1e9  # on CPU, waiting, timeslices (ns)


def _receive(worker: Any, pipe: Pipe) -> Any:
    deadline = time.monotonic() + REPLY_TIMEOUT
    while not pipe.poll(0.2):
        if not worker.is_alive():
            raise RuntimeError(f"a room worker process exited with code {worker.exitcode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"a room worker process did not answer within {REPLY_TIMEOUT} s")
    try:
        return pipe.recv()
    except EOFError:
        worker.join(10)
        raise RuntimeError(
            f"a room worker process ended without a report (exit code {worker.exitcode})"
        ) from None


def _expect(reply: Any, kind: str) -> Any:
    if reply[0] != kind:
        raise RuntimeError(f"room clients failed: {reply[1]}")
    return reply[1] if len(reply) > 1 else None


# -- in a worker process -----------------------------------------------------------------


def _worker_process(
    mode: Mode, grpc_port: int, http_port: int, first: int, count: int, clients: int, pipe: Pipe
) -> None:
    _raise_file_limit()
    try:
        asyncio.run(_worker(mode, grpc_port, http_port, first, count, clients, pipe))
    except Exception as error:
        pipe.send(("error", f"{type(error).__name__}: {error}"))


class _Tally:
    """What a worker's clients received while the window is open."""

    def __init__(self, count: int) -> None:
        self.counting = False
        self.received = [0] * count
        self.avatars: list[int] = []

    def got(self, client: int, keys: int) -> None:
        if self.counting:
            self.received[client] += 1
            if len(self.avatars) < 100_000:
                self.avatars.append(keys)


async def _worker(
    mode: Mode, grpc_port: int, http_port: int, first: int, count: int, clients: int, pipe: Pipe
) -> None:
    tally = _Tally(count)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        ready = [asyncio.Event() for _ in range(count)]
        tasks = []
        for slot in range(count):
            index = first + slot
            # Each client keeps its own 30 Hz clock, started at its own phase, as headsets do.
            phase = index / clients / RATE

            def got(keys: int, slot: int = slot) -> None:
                tally.got(slot, keys)

            if mode == "nanover":
                client = _nanover_client(http, http_port, index, phase, got, ready[slot])
            else:
                target = (
                    (f"statehub+grpc://127.0.0.1:{grpc_port}", grpc_port)
                    if mode == "session-grpc"
                    else (f"ws://127.0.0.1:{http_port}", http_port)
                )
                client = _session_client(*target, index, phase, got, ready[slot])
            tasks.append(asyncio.create_task(client))
        connected = asyncio.ensure_future(asyncio.gather(*(event.wait() for event in ready)))
        waiting: list[asyncio.Future[Any]] = [connected, *tasks]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                task.result()  # a client that ended before the room was ready: its error
        pipe.send(("ready",))
        _, start, end = await loop.run_in_executor(None, pipe.recv)
        await asyncio.sleep(start - time.monotonic())
        cpu_before, opened = time.process_time(), time.monotonic()
        tally.counting = True
        await asyncio.sleep(end - time.monotonic())
        tally.counting = False
        cpu_after, closed = time.process_time(), time.monotonic()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    window = closed - opened
    pipe.send(
        (
            "stats",
            {
                "rates": [received / window for received in tally.received],
                "avatars": tally.avatars,
                "cpu": (cpu_after - cpu_before) / window,
            },
        )
    )


async def _write_at_rate(phase: float, write: Callable[[int], Awaitable[None]]) -> None:
    period = 1 / RATE
    started = time.monotonic() + phase
    await asyncio.sleep(phase)
    frame = 0
    while True:
        await write(frame)
        frame += 1
        delay = started + frame * period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _avatar_updates(index: int, frame: int) -> dict[str, JsonValue]:
    return {
        f"avatar.u{index}": {
            "playerid": f"u{index}",
            "components": [{"name": "head", "position": [index * 0.1, 1.6, frame * 0.001]}],
        },
        f"update.index.u{index}": frame,
    }


def updated_keys(message: bytes) -> int | None:
    """How many keys a NanoVer state message updates; None for other messages.

    Reads only the header when the message has the layout the server packs, instead of
    decoding 100 avatars to count them.
    """
    if message.startswith(_STATE_HEADER):
        at = len(_STATE_HEADER)
        marker = message[at]
        if marker & 0xF0 == _FIXMAP:
            return marker & 0x0F
        if marker == _MAP16:
            return int.from_bytes(message[at + 1 : at + 3], "big")
        if marker == _MAP32:
            return int.from_bytes(message[at + 1 : at + 5], "big")
    decoded = msgpack.unpackb(message)
    state = decoded.get("state") if type(decoded) is dict else None
    return len(state["updates"]) if type(state) is dict else None


async def _nanover_client(
    http: aiohttp.ClientSession,
    http_port: int,
    index: int,
    phase: float,
    got: Callable[[int], None],
    ready: asyncio.Event,
) -> None:
    # Offering permessage-deflate, as NanoVer's Python client (websockets) does.
    url = f"ws://127.0.0.1:{http_port}/"
    async with http.ws_connect(url, max_msg_size=0, compress=15) as socket:

        async def write(frame: int) -> None:
            state = {"updates": _avatar_updates(index, frame)}
            await socket.send_bytes(msgpack.packb({"state": state}))

        writer = asyncio.create_task(_write_at_rate(phase, write))
        ready.set()
        try:
            async for message in socket:
                if message.type is aiohttp.WSMsgType.BINARY:
                    keys = updated_keys(message.data)
                    if keys is not None:
                        got(keys)
        finally:
            writer.cancel()


async def _session_client(
    host: str,
    port: int,
    index: int,
    phase: float,
    got: Callable[[int], None],
    ready: asyncio.Event,
) -> None:
    async with AsyncClient(host, port, reconnect=False, connect_timeout=60) as client:

        async def write(frame: int) -> None:
            await client.update(_avatar_updates(index, frame))

        # Count batches as they arrive (as the NanoVer client does), not as a ChangeStream
        # consumer takes them: that one coalesces again whenever its task runs late.
        connection = await client._connection()
        await connection.subscribe(1 / RATE, "", lambda batch: got(len(batch["updates"])))
        writer = asyncio.create_task(_write_at_rate(phase, write))
        ready.set()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            writer.cancel()
