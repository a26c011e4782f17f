"""Real servers, real faults, one recorded history, checked (``history_checker``).

Two ``statehub serve --store redis://`` processes over one redis-server (AOF with
``appendfsync always``: a Redis kill loses nothing). Writers, readers, watchers, a lease
holder and lock takers on both servers run while the faults come one after another:
kill -9 of a statehub server (restarted on its port), SIGSTOP of the other past the
sweep, a cut of that other's link to Redis (through a proxy the test controls) past the
sweep, kill -9 of Redis (restarted from its AOF). The quick run is part of ``make test``;
the soak run (``make soak``) repeats the faults for ``STATEHUB_SOAK_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

import pytest

from statehub import LockFailedError, ResourceLockedError, StatehubError
from statehub.bench.fleet import RedisProcess, restart_redis, start_redis, start_statehub, stop
from statehub.client import AsyncClient
from support.history_checker import FAILED, OK, UNKNOWN, Batch, History, Hold, Operation, check
from support.tcp_proxy import TcpProxy

KEYS = [f"k{n}" for n in range(6)]
#: Seconds a lease is taken for: a hold ends at its release or at this, whichever is first.
LEASE_S = 3.0
#: Past the sweep: the liveness TTL (5 s) + one heartbeat, and some.
PAUSE_S = 7.5
SETTLE_S = 30.0
#: More options for the statehub servers (``-v`` to see what one did when a run failed).
SERVER_OPTIONS: list[str] = []


class Cluster:
    """A redis-server and two statehub servers, each restartable on its port; the
    second reaches Redis through a proxy the test can cut."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis: RedisProcess = start_redis(directory / "redis", aof_always=True)
        self.proxy = TcpProxy(self.redis.port)  # Redis restarts on its port: it stays right
        self.servers: list[subprocess.Popen[str]] = []
        self.ports: list[int] = []
        self.starts = itertools.count()
        for url in (self.redis.url, f"redis://127.0.0.1:{self.proxy.port}/0"):
            process, port = self._start(url)
            self.servers.append(process)
            self.ports.append(port)

    def _start(self, redis_url: str, *arguments: str) -> tuple[subprocess.Popen[str], int]:
        """A statehub server, its log in the test's directory (read it when a run fails)."""
        with open(self.directory / f"statehub-{next(self.starts)}.log", "w") as log:
            return start_statehub(
                redis_url, "--no-http", *SERVER_OPTIONS, *arguments, stderr=log.fileno()
            )

    def kill_server(self, index: int) -> None:
        self.servers[index].kill()
        self.servers[index].wait()

    def restart_server_0(self) -> None:
        process, _ = self._start(self.redis.url, "--tcp-port", str(self.ports[0]))  # same port
        self.servers[0] = process

    def cut_server_1(self, cut: bool) -> None:
        """Cut (or restore) the second server's link to Redis."""
        if cut:
            self.proxy.cut()
        else:
            self.proxy.restore()

    def pause_server(self, index: int, paused: bool) -> None:
        os.kill(self.servers[index].pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def kill_redis(self) -> None:
        self.redis.process.kill()
        self.redis.process.wait()

    def restart_redis(self) -> None:
        self.redis = restart_redis(self.redis)

    def stop(self) -> None:
        for process in self.servers:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
            stop(process)
        self.proxy.close()
        stop(self.redis.process)


class Recorder:
    """The workload: each worker records what it did into one ``History``."""

    def __init__(self) -> None:
        self.history = History()
        self.stopping = asyncio.Event()
        self.values = itertools.count(1)

    async def writer(self, client: AsyncClient, name: str) -> None:
        while not self.stopping.is_set():
            key = random.choice(KEYS)
            value = f"{name}-{next(self.values)}"
            op = Operation(name, "write", key, value, time.monotonic(), server=_server(name))
            self.history.operations.append(op)
            try:
                op.revision = await client.set(key, value)
                op.outcome, op.epoch = OK, str(client.epoch)
            except ResourceLockedError:
                op.outcome = FAILED  # a foreign lease: refused before anything changed
            except (StatehubError, OSError):
                op.outcome = UNKNOWN  # the connection or Redis went: it may have happened
                await asyncio.sleep(0.05)
            op.completed = time.monotonic()
            await asyncio.sleep(0.005)

    async def reader(self, client: AsyncClient, name: str) -> None:
        while not self.stopping.is_set():
            await self.read(client, name, random.choice(KEYS))
            await asyncio.sleep(0.005)

    async def read(self, client: AsyncClient, name: str, key: str) -> None:
        op = Operation(name, "read", key, None, time.monotonic(), server=_server(name))
        try:
            entry = await client.entry(key)
        except (StatehubError, OSError):
            await asyncio.sleep(0.05)
            return  # a read that failed says nothing
        op.completed, op.outcome, op.epoch = time.monotonic(), OK, str(client.epoch)
        if entry is not None:
            op.value, op.revision = entry.value, entry.mod_revision
        self.history.operations.append(op)

    async def watcher(self, client: AsyncClient, name: str, copy: dict[str, Any]) -> None:
        """Follow every change into ``copy`` (until cancelled)."""
        async with client.subscribe() as changes:
            async for change in changes:
                batch = Batch(
                    name,
                    change.revision,
                    change.snapshot,
                    dict(change.updates),
                    list(change.removals),
                    # The session's: a new epoch ends the sessions, and the resumed
                    # stream's first batch is the new epoch's snapshot.
                    str(client.epoch),
                    time.monotonic(),
                )
                self.history.batches.append(batch)
                if change.snapshot:
                    copy.clear()
                copy.update(change.updates)
                for key in change.removals:
                    copy.pop(key, None)

    async def lease_holder(self, client: AsyncClient, name: str) -> None:
        holds: list[Hold] = []

        def lost(keys: list[str]) -> None:
            for hold in holds:
                if hold.key in keys and hold.lost_at is None:
                    hold.lost_at = time.monotonic()

        client.leases_lost.add_callback(lost)
        while not self.stopping.is_set():
            key = random.choice(KEYS)
            asked = time.monotonic()
            try:
                taken = await client.attempt_update_locks({key: LEASE_S})
            except (StatehubError, OSError):
                await asyncio.sleep(0.05)
                continue
            if not taken:
                await asyncio.sleep(0.01)
                continue
            # Held from its acknowledgement until LEASE_S after it was asked for: the server
            # starts the lease when it grants it, which may be any time in between, so it
            # may run out up to a reply's latency before acknowledgement + LEASE_S (a write
            # of another client acknowledged 1 ms before that was taken for an intrusion).
            hold = Hold(name, key, time.monotonic(), asked + LEASE_S)
            holds.append(hold)
            self.history.leases.append(hold)
            for _ in range(3):
                value = f"{name}-{next(self.values)}"
                op = Operation(name, "write", key, value, time.monotonic(), server=_server(name))
                self.history.operations.append(op)
                try:
                    op.revision, op.outcome = await client.set(key, value), OK
                    op.epoch = str(client.epoch)
                except (StatehubError, OSError):
                    op.outcome = UNKNOWN
                op.completed = time.monotonic()
            hold.end = min(hold.end, time.monotonic())
            try:
                await client.attempt_update_locks({key: None})
            except (StatehubError, OSError):
                await asyncio.sleep(0.05)

    async def lock_taker(self, client: AsyncClient, name: str) -> None:
        current: list[Hold] = []

        def lost(keys: list[str]) -> None:
            for hold in current:
                if hold.key in keys and hold.lost_at is None:
                    hold.lost_at = time.monotonic()

        client.locks_lost.add_callback(lost)
        owner = client.new_owner(name)
        while not self.stopping.is_set():
            try:
                held = await client.acquire_lock("door", owner, timeout=2.0)
            except (LockFailedError, StatehubError, OSError):
                await asyncio.sleep(0.05)
                continue
            hold = Hold(name, "door", time.monotonic(), fence=held.fence)
            current[:] = [hold]
            self.history.locks.append(hold)
            await asyncio.sleep(random.uniform(0.01, 0.1))
            hold.end = time.monotonic()
            with contextlib.suppress(StatehubError, OSError):  # lost while held: told
                await client.release_lock(held)


async def _faults(cluster: Cluster, rounds: int) -> None:
    """kill -9 and restart of server 0, SIGSTOP of server 1 past the sweep, a cut of
    server 1's link to Redis past the sweep, kill -9 and restart of Redis; ``rounds``
    times, with a little normal running between."""
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        await asyncio.sleep(2.0)
        cluster.kill_server(0)
        await asyncio.sleep(1.0)
        await loop.run_in_executor(None, cluster.restart_server_0)
        await asyncio.sleep(2.0)
        cluster.pause_server(1, True)
        await asyncio.sleep(PAUSE_S)
        cluster.pause_server(1, False)
        await asyncio.sleep(2.0)
        cluster.cut_server_1(True)
        await asyncio.sleep(PAUSE_S)
        cluster.cut_server_1(False)
        await asyncio.sleep(2.0)
        cluster.kill_redis()
        await asyncio.sleep(1.0)
        await loop.run_in_executor(None, cluster.restart_redis)
        await asyncio.sleep(2.0)


class FaultedCluster(Protocol):
    """What a checked run needs of the servers it faults: their session ports."""

    ports: list[int]

    def stop(self) -> None: ...


async def run_with_faults(
    cluster: FaultedCluster, faults: Callable[[], Awaitable[None]]
) -> tuple[History, list[str]]:
    """Run the workload on ``cluster``'s servers while ``faults()`` runs; the history and
    its violations. The cluster is stopped at the end, whatever happened."""
    recorder = Recorder()
    stuck_calls: list[str] = []
    try:
        async with AsyncExitStack() as stack:
            clients: list[AsyncClient] = []
            for index, port in enumerate(cluster.ports):
                for role in ("writer1", "writer2", "reader", "watcher", "leases", "locks"):
                    name = f"{role}@{'AB'[index]}"
                    clients.append(
                        await stack.enter_async_context(AsyncClient("127.0.0.1", port, name=name))
                    )
            workers: list[asyncio.Task[None]] = []
            watchers: list[asyncio.Task[None]] = []
            copies: list[dict[str, Any]] = []
            roles: dict[str, Callable[[AsyncClient, str], Coroutine[Any, Any, None]]] = {
                "writer1": recorder.writer,
                "writer2": recorder.writer,
                "reader": recorder.reader,
                "leases": recorder.lease_holder,
                "locks": recorder.lock_taker,
            }
            for client in clients:
                role = client.name.split("@")[0]
                if role == "watcher":
                    copies.append({})
                    watcher = recorder.watcher(client, client.name, copies[-1])
                    watchers.append(asyncio.create_task(watcher))
                else:
                    work = roles[role](client, client.name)
                    workers.append(asyncio.create_task(work, name=client.name))
            # If the run fails half-way, no task may outlive it (on clients being closed).
            stack.push_async_callback(_cancel_all, [*workers, *watchers])
            await faults()
            recorder.stopping.set()
            # A worker still in a call after SETTLE_S waits for an answer that never
            # comes: a finding of its own, not a reason to hang the run.
            _, stuck = await asyncio.wait(workers, timeout=SETTLE_S)
            for worker in stuck:
                worker.cancel()
                stuck_calls.append(f"{worker.get_name()} got no answer within {SETTLE_S} s")
            await asyncio.gather(*workers, return_exceptions=True)
            final = await _final_state(clients[0])
            for client in clients:  # the last reads: nothing acknowledged may be missing
                for key in KEYS:
                    await recorder.read(client, f"final@{client.name}", key)
            # Every watcher comes to the state as it is (a missed change would stay missed).
            converged = await _converge(copies, final)
    finally:
        cluster.stop()
    problems = [*stuck_calls, *check(recorder.history)]
    for server, copy in zip("AB", copies, strict=True):
        shown = {key: copy.get(key) for key in KEYS}
        if not converged:
            problems.append(f"watcher@{server} ended with {shown}, the state is {final}")
    return recorder.history, problems


async def _converge(copies: list[dict[str, Any]], final: dict[str, Any]) -> bool:
    deadline = time.monotonic() + SETTLE_S
    while any({key: copy.get(key) for key in KEYS} != final for copy in copies):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _server(name: str) -> str:
    return name.rsplit("@", 1)[1]


async def _final_state(client: AsyncClient) -> dict[str, Any]:
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            everything = await client.get_all()
            return {key: everything.get(key) for key in KEYS}
        except (StatehubError, OSError):
            assert time.monotonic() < deadline, "the servers did not come back"
            await asyncio.sleep(0.1)


def summary(history: History) -> str:
    acknowledged = sum(op.outcome == OK for op in history.operations if op.kind == "write")
    return (
        f"{len(history.operations)} operations ({acknowledged} acknowledged writes), "
        f"{len(history.batches)} watch batches, {len(history.leases)} lease holds, "
        f"{len(history.locks)} lock holds"
    )


async def test_a_history_through_kills_pauses_and_a_redis_restart_is_consistent(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path)
    history, problems = await run_with_faults(cluster, lambda: _faults(cluster, rounds=1))
    assert not problems, "\n".join(problems[:20])
    # The run did exercise what it checks.
    assert sum(op.outcome == OK for op in history.operations if op.kind == "write") > 500
    assert history.leases and history.locks and len(history.batches) > 100
    print(summary(history))


@pytest.mark.soak
async def test_a_long_history_with_repeated_faults_is_consistent(tmp_path: Path) -> None:
    seconds = float(os.environ.get("STATEHUB_SOAK_SECONDS", "600"))
    rounds = max(1, int(seconds // 20))
    cluster = Cluster(tmp_path)
    history, problems = await run_with_faults(cluster, lambda: _faults(cluster, rounds))
    assert not problems, "\n".join(problems[:50])
    print(summary(history))
