"""Durable writes: acknowledged changes per second with the SQLite store.

Each writer changes one key and waits for the acknowledgement before its next change:
in-process, a thread calling ``update_state`` then ``wait_durable``; over the network, a
client (one session each) calling ``set`` on ``statehub serve --data`` in a child
process. With durability "disk" the writers share fsyncs (group commit); "memory"
acknowledges once the change is in memory, for comparison.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
import threading
import time

from statehub.bench.fleet import start_serve
from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient
from statehub.core.change import DictionaryChange
from statehub.store.sqlite import DURABILITY_MODES, Durability, SQLiteStore
from statehub.store.state_dictionary import StateDictionary

#: Seconds each workload runs for.
DURATION = 2.0


def start_server(
    data: str, durability: Durability, *, stderr: int | None = subprocess.DEVNULL
) -> tuple[subprocess.Popen[str], int]:
    """``statehub serve --data DATA`` on a free port; returns the process and the port."""
    return start_serve("--data", data, "--durability", durability, stderr=stderr)


def run() -> list[Result]:
    results = []
    for mode in DURABILITY_MODES:
        for writers in (1, 16):
            results += _in_process(writers, mode)
    for mode in DURABILITY_MODES:
        for writers in (1, 16):
            results.append(_over_network(writers, mode))
    return results


def _in_process(writers: int, durability: Durability, duration: float = DURATION) -> list[Result]:
    """Acknowledged writes/s, and for "disk" how many changes shared each fsync."""
    with tempfile.TemporaryDirectory(prefix="statehub-bench-") as directory:
        store = SQLiteStore(directory, durability=durability)
        try:
            state = StateDictionary(store=store)
            acknowledged = _run_writers(state, writers, duration)
            revisions = store.flush()
        finally:
            store.close()
    workload = f"in-process, {writers} writer{'s' if writers > 1 else ''}, ack after {durability}"
    results = [Result(workload, acknowledged / duration, "acked writes/s")]
    if durability == "disk":
        per_fsync = revisions / max(1, store.transactions)
        results.append(Result(f"{workload}: changes per fsync", per_fsync, "changes"))
    return results


def _run_writers(state: StateDictionary, writers: int, duration: float) -> int:
    counts = [0] * writers
    start = threading.Barrier(writers + 1)
    stop = threading.Event()

    def write(index: int) -> None:
        key = f"writer{index}"
        start.wait()
        n = 0
        while not stop.is_set():
            revision = state.update_state(index, DictionaryChange({key: n}))
            state.wait_durable(revision)
            n += 1
        counts[index] = n

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(writers)]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(duration)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts)


def _over_network(writers: int, durability: Durability, duration: float = DURATION) -> Result:
    """Clients in this process, one session each, a server in a child process."""
    with tempfile.TemporaryDirectory(prefix="statehub-bench-") as directory:
        server, port = start_server(directory, durability)
        try:
            acknowledged = asyncio.run(_network_writers(port, writers, duration))
        finally:
            server.send_signal(signal.SIGTERM)  # a clean stop: the store is closed
            server.wait(timeout=30)
    return Result(
        f"network, {writers} client{'s' if writers > 1 else ''}, ack after {durability}",
        acknowledged / duration,
        "acked writes/s",
    )


async def _network_writers(port: int, writers: int, duration: float) -> int:
    clients = [AsyncClient("127.0.0.1", port, reconnect=False) for _ in range(writers)]
    await asyncio.gather(*(client.connect() for client in clients))
    stop = asyncio.Event()

    async def write(index: int) -> int:
        client, key, n = clients[index], f"writer{index}", 0
        while not stop.is_set():
            await client.set(key, n)
            n += 1
        return n

    try:
        tasks = [asyncio.create_task(write(i)) for i in range(writers)]
        await asyncio.sleep(duration)
        stop.set()
        return sum(await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(client.close() for client in clients))
