"""A checked history through Sentinel failovers (``history_checker``).

A primary, two replicas and three Sentinels; two ``statehub serve --store
redis+sentinel://... --replicas 1`` processes, each with the workload of
``test_redis_fault_history`` (writers, readers, watchers, a lease holder, lock takers).
Each round kills the primary (kill -9), waits for Sentinel to promote a replica, then
restarts the old primary, which Sentinel turns into a replica of the new one, so the
next round starts again with two. With ``--replicas 1`` no acknowledged write may be
lost (docs/redis.md), so the whole history must check: per-key linearizability, watches
without gaps, no lease intrusion, fenced lock holds. Acknowledgements must also resume
within the bound docs/redis.md states. The quick run is part of ``make test``; the soak
run (``make soak``) repeats the failover for ``STATEHUB_SOAK_SECONDS``.

A second run first cuts the primary off from its replicas, so the failover loses the
changes it made meanwhile (none of them an acknowledged write): a new epoch, which
watchers must cross with a snapshot and every check must still hold across. It fails
today (the lock fences those lost changes had handed out are handed out again), so it is
marked as an expected failure until that is fixed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from statehub.bench.fleet import (
    RedisProcess,
    restart_redis,
    start_redis,
    start_sentinel,
    start_statehub,
    stop,
)
from support.history_checker import OK, History
from support.polling import eventually_sync
from test_redis_fault_history import run_with_faults, summary
from test_redis_sentinel import (
    ACKNOWLEDGED_AGAIN_WITHIN_S,
    DEADLINE_S,
    _replicas_online,
    _sentinels_ready,
)

SERVICE = "mymaster"
#: How long the primary runs on without replicas before it is killed: longer than the
#: ``WAIT`` of ``--replicas`` (1 s), during which a server sends no other commit, so that
#: writes whose ``WAIT`` fell short are followed by more, which no replica gets.
UNREPLICATED_S = 1.5


class SentinelCluster:
    """Three redis-servers (one primary), three Sentinels, two statehub servers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis: dict[int, RedisProcess] = {}
        self.sentinels: list[RedisProcess] = []
        self.servers: list[subprocess.Popen[str]] = []
        self.ports: list[int] = []
        #: When each failover began (the primary's kill -9), for the resume bound.
        self.kills: list[float] = []
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        primary = start_redis(self.directory / "redis0")
        self.redis[primary.port] = primary
        for n in (1, 2):
            replica = start_redis(
                self.directory / f"redis{n}", extra=["--replicaof", "127.0.0.1", str(primary.port)]
            )
            self.redis[replica.port] = replica
        eventually_sync(lambda: _replicas_online(primary, 2), timeout=DEADLINE_S)
        for n in range(3):
            self.sentinels.append(start_sentinel(self.directory / f"sentinel{n}", primary.port))
        eventually_sync(lambda: _sentinels_ready(self.sentinels), timeout=DEADLINE_S)
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        for n in range(2):
            with open(self.directory / f"statehub-{n}.log", "w") as log:
                process, port = start_statehub(
                    f"redis+sentinel://{hosts}/{SERVICE}/0",
                    "--no-http",
                    "--replicas",
                    "1",
                    stderr=log.fileno(),
                )
            self.servers.append(process)
            self.ports.append(port)

    def primary_port(self) -> int | None:
        """The primary every Sentinel names (None while they disagree)."""
        named = set()
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            finally:
                client.close()
            named.add(int(address[1]))
        return named.pop() if len(named) == 1 else None

    def fail_over(self, *, lose_writes: bool) -> None:
        """kill -9 of the primary, once it has both replicas; back once Sentinel promoted
        a replica and the old primary was restarted (Sentinel makes it a replica of the
        new one within about 10 s: the next failover waits for it). Blocking: run it in
        a thread.

        ``lose_writes``: first the primary goes on committing for ``UNREPLICATED_S`` with
        its replicas cut off, as behind a failed link, so what it commits then is lost in
        the failover and a new epoch starts. The replicas are stopped (SIGSTOP) while the
        primary drops their links, so that they neither reconnect nor read what it sent
        after, until it is dead. A write among those changes was not acknowledged
        (``WAIT 1`` fell short), but reads, watches, leases and locks saw them."""
        old = self.primary_port()
        assert old is not None, "the Sentinels disagree on the primary"
        eventually_sync(lambda: _replicas_online(self.redis[old], 2), timeout=DEADLINE_S)
        replicas = [redis for port, redis in self.redis.items() if port != old]
        try:
            if lose_writes:
                for replica in replicas:
                    os.kill(replica.process.pid, signal.SIGSTOP)
                primary = self.redis[old].client()
                try:
                    primary.execute_command("CLIENT", "KILL", "TYPE", "replica")
                finally:
                    primary.close()
                time.sleep(UNREPLICATED_S)
            self.kills.append(time.monotonic())
            self.redis[old].process.kill()
            self.redis[old].process.wait()
        finally:
            for replica in replicas:
                os.kill(replica.process.pid, signal.SIGCONT)
        eventually_sync(lambda: self.primary_port() not in (None, old), timeout=DEADLINE_S)
        self.redis[old] = restart_redis(self.redis[old])  # empty: Sentinel makes it a replica

    def stop(self) -> None:
        for process in self.servers:
            stop(process)
        for sentinel in self.sentinels:
            stop(sentinel.process)
        for server in self.redis.values():
            stop(server.process)


async def _failovers(cluster: SentinelCluster, rounds: int, *, lose_writes: bool) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        await asyncio.sleep(2.0)
        fail_over = functools.partial(cluster.fail_over, lose_writes=lose_writes)
        await loop.run_in_executor(None, fail_over)
        await asyncio.sleep(4.0)  # the workload on the new primary


def _resume_delays(history: History, kills: list[float]) -> list[float]:
    """Per failover, seconds from the kill to the first acknowledgement of a write
    invoked after it (one in flight may be answered just after the kill)."""
    writes = [op for op in history.operations if op.kind == "write" and op.outcome == OK]
    return [
        min((op.completed - kill for op in writes if op.invoked > kill), default=float("inf"))
        for kill in kills
    ]


async def _checked_run(
    directory: Path, rounds: int, *, lose_writes: bool
) -> tuple[History, list[str]]:
    """The history of a run through ``rounds`` failovers, and its violations (those of
    the checker, and acknowledgements that resumed later than docs/redis.md's bound)."""
    cluster = SentinelCluster(directory)
    failovers = functools.partial(_failovers, cluster, rounds, lose_writes=lose_writes)
    history, problems = await run_with_faults(cluster, failovers)
    delays = _resume_delays(history, cluster.kills)
    problems += [
        f"writes were acknowledged again only {delay:.1f} s after the primary died "
        f"(docs/redis.md: under {ACKNOWLEDGED_AGAIN_WITHIN_S} s)"
        for delay in delays
        if delay >= ACKNOWLEDGED_AGAIN_WITHIN_S
    ]
    print(summary(history), "; acknowledging again after", ", ".join(f"{d:.1f} s" for d in delays))
    return history, problems


def _exercised(history: History) -> None:
    """The run did exercise what it checks."""
    assert sum(op.outcome == OK for op in history.operations if op.kind == "write") > 100
    assert history.leases and history.locks and len(history.batches) > 50


async def test_a_history_through_a_sentinel_failover_is_consistent(tmp_path: Path) -> None:
    history, problems = await _checked_run(tmp_path, rounds=1, lose_writes=False)
    assert not problems, "\n".join(problems[:20])
    _exercised(history)
    assert len({batch.epoch for batch in history.batches}) == 1, "history was lost"


async def test_a_history_through_a_failover_that_lost_changes_is_consistent(
    tmp_path: Path,
) -> None:
    history, problems = await _checked_run(tmp_path, rounds=1, lose_writes=True)
    _exercised(history)
    # Lock fences the lost changes handed out must not come again (found by this test: the
    # new primary's fence counter was behind them; fences now start at Redis's clock).
    assert len({batch.epoch for batch in history.batches}) > 1, "the fault did not happen"
    assert not problems, "\n".join(problems[:20])


@pytest.mark.soak
async def test_a_long_history_with_repeated_sentinel_failovers_is_consistent(
    tmp_path: Path,
) -> None:
    seconds = float(os.environ.get("STATEHUB_SOAK_SECONDS", "600"))
    rounds = max(1, int(seconds // 20))
    history, problems = await _checked_run(tmp_path, rounds, lose_writes=False)
    assert not problems, "\n".join(problems[:50])
    _exercised(history)
