"""Keys that expire and the history of keys, on a server on loopback.

Expiry wave: 100,000 keys written with the same ttl expire together while another client
(in a process of its own) writes one key at a time, each write awaited: the p99 of that
client's write latency during the wave, next to the same figure with nothing expiring,
says whether expiry stops serving (the server removes due keys in batches of
``EXPIRY_BATCH``, one batch per turn of its event loop).

History reads: a server keeping 10 versions per key answers ``client.history(key)``,
pipelined by one client; and ``state.history`` in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from multiprocessing.connection import Connection as Pipe

from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient
from statehub.core.change import DictionaryChange
from statehub.core.key_history import HistoryRetention
from statehub.serving.state_server import StateServer
from statehub.store.state_dictionary import StateDictionary

EXPIRING = 100_000
CHUNK = 10_000  # keys per update while setting up
TTL_S = 2.0
HISTORY_KEYS = 1_000
HISTORY_VERSIONS = 10
HISTORY_READS = 20_000
WINDOW = 256
#: The longest the expiry wave may take before the benchmark gives up.
WAVE_LIMIT_S = 120.0


def run() -> list[Result]:
    return asyncio.run(_run_all())


async def _run_all() -> list[Result]:
    results = await _expiry_wave()
    results.extend(await _history_reads())
    results.append(_history_in_process())
    return results


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _writer(port: int, pipe: Pipe) -> None:
    """In a process of its own: write one key at a time (each write awaited) until told to
    stop; send back (monotonic time sent, latency) of each write."""
    from statehub.client.sync_client import Client

    latencies: list[tuple[float, float]] = []
    with Client("127.0.0.1", port, reconnect=False) as client:
        client.set("bench.writer", -1)
        pipe.send("ready")
        count = 0
        while not pipe.poll():
            started = time.monotonic()
            client.set("bench.writer", count)
            latencies.append((started, time.monotonic() - started))
            count += 1
    pipe.send(latencies)


async def _expiry_wave() -> list[Result]:
    server = StateServer(address="127.0.0.1", port=0, max_message_bytes=16 * 1024 * 1024)
    await server.start()
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    writer = context.Process(target=_writer, args=(server.port, theirs), daemon=True)
    writer.start()
    try:
        state = server.state
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, ours.recv)  # "ready"
        idle_from = time.monotonic()
        await asyncio.sleep(1.0)  # the writer alone, nothing expiring
        idle_to = time.monotonic()
        async with AsyncClient("127.0.0.1", server.port, reconnect=False) as loader:
            for start in range(0, EXPIRING, CHUNK):
                keys = [f"bench.expiring.{i}" for i in range(start, start + CHUNK)]
                await loader.update(dict.fromkeys(keys, 1), ttl=dict.fromkeys(keys, TTL_S))
            due = time.monotonic() + (state.next_expiry() or 0.0)
            all_gone = asyncio.Event()

            def expired(access_token: object, change: DictionaryChange) -> None:
                if state.next_expiry() is None:
                    all_gone.set()

            state.content_updated.add_callback(expired)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_gone.wait(), TTL_S + WAVE_LIMIT_S)
            gone = time.monotonic()
            left = len(await loader.keys("bench.expiring."))
        ours.send("stop")
        latencies: list[tuple[float, float]] = await loop.run_in_executor(None, ours.recv)
    finally:
        writer.join(timeout=30)
        if writer.is_alive():
            writer.kill()
            writer.join()
        await server.stop()
    if left:
        raise RuntimeError(f"{left} keys had not expired after {WAVE_LIMIT_S} s")
    idle = [latency for sent, latency in latencies if idle_from <= sent < idle_to]
    during = [latency for sent, latency in latencies if due <= sent < gone]
    return [
        Result(f"expiry wave: {EXPIRING:,} keys removed", (gone - due) * 1000, "ms"),
        Result("expiry wave: another client's write, p99, idle", _p99(idle) * 1000, "ms"),
        Result("expiry wave: another client's write, p99, during", _p99(during) * 1000, "ms"),
        Result("expiry wave: that client's writes during it", len(during), "writes"),
    ]


async def _history_reads() -> list[Result]:
    state = StateDictionary(history=HistoryRetention(versions=HISTORY_VERSIONS))
    server = StateServer(address="127.0.0.1", port=0, state=state)
    await server.start()
    try:
        async with AsyncClient("127.0.0.1", server.port, reconnect=False) as client:
            keys = [f"bench.history.{i}" for i in range(HISTORY_KEYS)]
            for version in range(HISTORY_VERSIONS):
                await client.update(dict.fromkeys(keys, version))
            started = time.perf_counter()
            for start in range(0, HISTORY_READS, WINDOW):
                reads = [
                    client.history(keys[i % HISTORY_KEYS])
                    for i in range(start, min(start + WINDOW, HISTORY_READS))
                ]
                for versions in await asyncio.gather(*reads):
                    assert len(versions) == HISTORY_VERSIONS
            elapsed = time.perf_counter() - started
    finally:
        await server.stop()
    return [
        Result(
            f"history reads over TCP ({HISTORY_VERSIONS} versions each, pipelined)",
            HISTORY_READS / elapsed,
            "reads/s",
        )
    ]


def _history_in_process() -> Result:
    state = StateDictionary(history=HistoryRetention(versions=HISTORY_VERSIONS))
    keys = [f"bench.history.{i}" for i in range(HISTORY_KEYS)]
    for version in range(HISTORY_VERSIONS):
        state.update_state("bench", DictionaryChange(dict.fromkeys(keys, version)))
    reads = 200_000
    started = time.perf_counter()
    for i in range(reads):
        state.history(keys[i % HISTORY_KEYS])
    return Result(
        f"history reads in process ({HISTORY_VERSIONS} versions each)",
        reads / (time.perf_counter() - started),
        "reads/s",
    )
