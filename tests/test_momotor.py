"""Momotor workers take statehub's read/write locks with Momotor's own client.

Every worker here is ``momotor.rpc.shared.SharedState`` from PyPI (momotor-engine-shared,
over a grpclib channel) talking to a real statehub server's gRPC port, where it calls
``/momotor.rpc.proto.Worker/sharedLock``. Its locks and a statehub client's are one lock
table: they exclude each other, in one queue, with writer preference and FIFO.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from momotor.rpc.auth.client import AuthenticatingChannel
from momotor.rpc.exception import AuthException, FormatException
from momotor.rpc.proto.worker_grpc import WorkerStub
from momotor.rpc.shared import SharedState
from momotor.shared.state import LockFailed

from statehub import StateServer
from statehub.bench.fleet import ServedPorts, start_redis, start_serve_ports, stop
from statehub.client import AsyncClient
from support.auth import TOKENS, auth_server, identities, write_identities
from support.polling import eventually
from support.raw_session import running_server

#: Server keepalive in the tests: a worker that stops answering pings is dropped, and its
#: locks released, within their sum (docs/momotor.md).
KEEPALIVE_S = 1.0
KEEPALIVE_TIMEOUT_S = 1.0


@asynccontextmanager
async def worker(port: int, token: str | None = None) -> AsyncIterator[SharedState]:
    """A Momotor worker's shared state on its own grpclib channel to ``port``."""
    channel = Channel("127.0.0.1", port)
    try:
        stub = WorkerStub(AuthenticatingChannel(channel, token) if token else channel)
        yield SharedState(stub)
    finally:
        channel.close()


class Holder:
    """A task holding a lock from ``enter`` until ``release`` is set; ``granted`` marks
    when it got the lock, and every grant is appended to ``order``."""

    def __init__(
        self,
        name: str,
        lock: Callable[[], AbstractAsyncContextManager[Any]],
        order: list[str],
    ) -> None:
        self.name = name
        self.granted = asyncio.Event()
        self.release = asyncio.Event()
        self._lock = lock
        self._order = order
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with self._lock():
            self._order.append(self.name)
            self.granted.set()
            await self.release.wait()

    async def finish(self) -> None:
        self.release.set()
        await asyncio.wait_for(self.task, 10)


def waiting(server: StateServer) -> int:
    return server.locks.counts()[1]


async def test_a_worker_takes_and_releases_an_exclusive_lock() -> None:
    async with running_server() as server, worker(server.grpc_port) as state:
        assert await state.test_lock("grade/1") is False
        async with state.get_lock("grade/1"):
            held = await server.locks.holdings()
            assert [(h.key, h.mode) for h in held] == [("grade/1", "exclusive")]
            assert await state.test_lock("grade/1") is True  # held in exclusive mode
            assert await state.test_lock("grade/1", exclusive=False) is False
        assert await server.locks.holdings() == []
        assert await state.test_lock("grade/1") is False


async def test_workers_share_a_shared_lock_and_a_writer_waits_for_them() -> None:
    order: list[str] = []
    async with (
        running_server() as server,
        worker(server.grpc_port) as one,
        worker(server.grpc_port) as two,
        worker(server.grpc_port) as three,
    ):
        reader_1 = Holder("r1", lambda: one.get_lock("k", exclusive=False), order)
        reader_2 = Holder("r2", lambda: two.get_lock("k", exclusive=False), order)
        await asyncio.wait_for(asyncio.gather(reader_1.granted.wait(), reader_2.granted.wait()), 10)
        assert await three.test_lock("k", exclusive=False) is True
        assert await three.test_lock("k", exclusive=True) is False
        writer = Holder("w", lambda: three.get_lock("k"), order)
        await eventually(lambda: waiting(server) == 1)
        await reader_1.finish()
        assert not writer.granted.is_set()  # one reader still holds it
        await reader_2.finish()
        await asyncio.wait_for(writer.granted.wait(), 10)
        await writer.finish()
        assert order == ["r1", "r2", "w"] or order == ["r2", "r1", "w"]
        assert await server.locks.holdings() == []


async def test_a_workers_exclusive_lock_blocks_a_statehub_client_and_the_reverse() -> None:
    order: list[str] = []
    async with (
        running_server() as server,
        worker(server.grpc_port) as state,
        AsyncClient("127.0.0.1", server.port) as client,
    ):
        momotor = Holder("momotor", lambda: state.get_lock("job/7"), order)
        await asyncio.wait_for(momotor.granted.wait(), 10)
        assert await client.test_lock("job/7") is False  # statehub's: "free?"
        statehub = Holder("statehub", lambda: client.get_lock("job/7"), order)
        await eventually(lambda: waiting(server) == 1)
        await momotor.finish()
        await asyncio.wait_for(statehub.granted.wait(), 10)
        assert await state.test_lock("job/7") is True  # Momotor's: "held exclusively?"
        again = Holder("momotor again", lambda: state.get_lock("job/7"), order)
        await eventually(lambda: waiting(server) == 1)
        await statehub.finish()
        await asyncio.wait_for(again.granted.wait(), 10)
        await again.finish()
        assert order == ["momotor", "statehub", "momotor again"]


async def test_the_blocking_client_and_a_worker_exclude_each_other() -> None:
    async with running_server() as server, worker(server.grpc_port) as state:
        order: list[str] = []
        momotor = Holder("momotor", lambda: state.get_lock("blocking"), order)
        await asyncio.wait_for(momotor.granted.wait(), 10)

        def blocking() -> None:
            from statehub import Client

            with Client("127.0.0.1", server.port) as client, client.get_lock("blocking"):
                order.append("client")

        thread = asyncio.create_task(asyncio.to_thread(blocking))
        await eventually(lambda: waiting(server) == 1)
        await momotor.finish()
        await asyncio.wait_for(thread, 10)
        assert order == ["momotor", "client"]


async def test_fifo_writers_and_writer_preference_across_both_kinds_of_client() -> None:
    """Queued behind an exclusive holder: writer W1 (worker), reader R1 (statehub), writer
    W2 (statehub), reader R2 (worker). Writers go first, in order; then readers together."""
    order: list[str] = []
    async with (
        running_server() as server,
        worker(server.grpc_port) as w1_state,
        worker(server.grpc_port) as r2_state,
        worker(server.grpc_port) as holder_state,
        AsyncClient("127.0.0.1", server.port) as client,
    ):
        holder = Holder("holder", lambda: holder_state.get_lock("q"), order)
        await asyncio.wait_for(holder.granted.wait(), 10)
        queued = [
            ("W1", lambda: w1_state.get_lock("q")),
            ("R1", lambda: client.get_lock("q", exclusive=False)),
            ("W2", lambda: client.get_lock("q")),
            ("R2", lambda: r2_state.get_lock("q", exclusive=False)),
        ]
        holders: dict[str, Holder] = {}
        for number, (name, lock) in enumerate(queued, start=1):
            holders[name] = Holder(name, lock, order)
            await eventually(lambda n=number: waiting(server) == n)  # type: ignore[misc]
        await holder.finish()
        await asyncio.wait_for(holders["W1"].granted.wait(), 10)
        await holders["W1"].finish()
        await asyncio.wait_for(holders["W2"].granted.wait(), 10)
        assert order == ["holder", "W1", "W2"]
        await holders["W2"].finish()
        await asyncio.wait_for(
            asyncio.gather(holders["R1"].granted.wait(), holders["R2"].granted.wait()), 10
        )
        assert sorted(order[3:]) == ["R1", "R2"]
        await holders["R1"].finish()
        await holders["R2"].finish()
        assert server.locks.counts() == (0, 0)


async def test_a_new_worker_reader_waits_while_a_statehub_writer_waits() -> None:
    order: list[str] = []
    async with (
        running_server() as server,
        worker(server.grpc_port) as reader_state,
        worker(server.grpc_port) as late_state,
        AsyncClient("127.0.0.1", server.port) as client,
    ):
        reader = Holder("reader", lambda: reader_state.get_lock("p", exclusive=False), order)
        await asyncio.wait_for(reader.granted.wait(), 10)
        writer = Holder("writer", lambda: client.get_lock("p"), order)
        await eventually(lambda: waiting(server) == 1)
        late = Holder("late reader", lambda: late_state.get_lock("p", exclusive=False), order)
        await eventually(lambda: waiting(server) == 2)  # not let in beside the first reader
        await reader.finish()
        await asyncio.wait_for(writer.granted.wait(), 10)
        await writer.finish()
        await asyncio.wait_for(late.granted.wait(), 10)
        await late.finish()
        assert order == ["reader", "writer", "late reader"]


async def test_test_lock_means_held_in_that_mode_for_momotor_and_free_for_statehub() -> None:
    async with (
        running_server() as server,
        worker(server.grpc_port) as state,
        AsyncClient("127.0.0.1", server.port) as client,
    ):

        async def answers() -> tuple[bool, bool, bool, bool]:
            return (
                await state.test_lock("t", exclusive=True),
                await state.test_lock("t", exclusive=False),
                await client.test_lock("t", exclusive=True),
                await client.test_lock("t", exclusive=False),
            )

        # (momotor held exclusive, momotor held shared, statehub free for a writer, for a reader)
        assert await answers() == (False, False, True, True)
        async with client.get_lock("t", exclusive=False):
            assert await answers() == (False, True, False, True)
        async with state.get_lock("t", exclusive=True):
            assert await answers() == (True, False, False, False)
        assert await answers() == (False, False, True, True)


async def test_a_worker_cancelling_its_wait_leaves_no_trace() -> None:
    async with (
        running_server() as server,
        worker(server.grpc_port) as state,
        AsyncClient("127.0.0.1", server.port) as client,
    ):
        async with client.get_lock("c"):

            async def take() -> None:
                async with state.get_lock("c"):
                    pass

            taking = asyncio.ensure_future(take())
            await eventually(lambda: waiting(server) == 1, "the worker's wait queued")
            taking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await taking
            await eventually(lambda: waiting(server) == 0)
        await eventually(lambda: server.locks.counts() == (0, 0))
        async with state.get_lock("c"):  # the lock passed on: nobody holds it
            assert await client.test_lock("c") is False


async def test_a_worker_whose_connection_closes_while_holding_loses_its_lock() -> None:
    async with running_server() as server, AsyncClient("127.0.0.1", server.port) as client:
        channel = Channel("127.0.0.1", server.grpc_port)
        try:
            state = SharedState(WorkerStub(channel))
            holding = state.get_lock("dropped")
            await holding.__aenter__()  # never released: the connection goes instead
            assert await client.test_lock("dropped") is False
            channel.close()
            async with asyncio.timeout(10), client.get_lock("dropped"):
                pass
            assert server.locks.counts() == (0, 0)
        finally:
            channel.close()


async def test_a_key_statehub_refuses_reaches_the_worker_as_a_format_exception() -> None:
    async with running_server() as server, worker(server.grpc_port) as state:
        with pytest.raises(FormatException):
            async with state.get_lock(""):
                pass
        with pytest.raises(FormatException):
            async with state.get_lock("k" * 100_000):
                pass
        async with state.get_lock("fine"):  # the channel still works
            pass


WORKER_PROCESS = """
import asyncio, sys
from grpclib import GRPCError, Status
from grpclib.client import Channel
from momotor.rpc.proto.worker_grpc import WorkerStub
from momotor.rpc.shared import SharedState
from momotor.shared.state import LockFailed

async def main():
    channel = Channel("127.0.0.1", int(sys.argv[1]))
    async with SharedState(WorkerStub(channel)).get_lock("grading/42"):
        print("held", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGSTOP"])
async def test_a_killed_or_frozen_worker_loses_its_lock_within_the_keepalive_bound(
    signal_name: str,
) -> None:
    """SIGKILL: the kernel closes the socket. SIGSTOP: the socket stays open and only the
    server's keepalive (ping every KEEPALIVE_S, KEEPALIVE_TIMEOUT_S to answer) notices."""
    if not hasattr(signal, signal_name):
        pytest.skip(f"needs {signal_name}")
    async with (
        running_server(keepalive_time=KEEPALIVE_S, keepalive_timeout=KEEPALIVE_TIMEOUT_S) as server,
        AsyncClient("127.0.0.1", server.port) as client,
    ):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER_PROCESS,
            str(server.grpc_port),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line.strip() == b"held"
            assert await client.test_lock("grading/42") is False
            os.kill(process.pid, getattr(signal, signal_name))
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            # Granted once the server gives up on the worker: within keepalive + timeout
            # (plus scheduling slack on a loaded 2-core machine).
            async with (
                asyncio.timeout(KEEPALIVE_S + KEEPALIVE_TIMEOUT_S + 3),
                client.get_lock("grading/42"),
            ):
                released_after = loop.time() - killed_at
            assert released_after < KEEPALIVE_S + KEEPALIVE_TIMEOUT_S + 3
        finally:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def test_auth_token_maps_to_statehub_identities_with_lock_rights_by_prefix(
    tmp_path: Path,
) -> None:
    """walt may lock ``locks/w/``, rita (a reader) nothing; no anonymous role."""
    async with (
        auth_server(tmp_path) as server,
        worker(server.grpc_port, TOKENS["walt"]) as walt,
        worker(server.grpc_port, TOKENS["rita"]) as rita,
        worker(server.grpc_port, "not-a-token") as stranger,
        worker(server.grpc_port) as nobody,
    ):
        async with walt.get_lock("locks/w/job"):
            assert await walt.test_lock("locks/w/job") is True
        for state, key in [
            (walt, "locks/other"),  # outside walt's prefix
            (rita, "locks/w/job"),  # a role without lock rights
            (stranger, "locks/w/job"),  # a token the server does not know
            (nobody, "locks/w/job"),  # no token, and no anonymous role
        ]:
            with pytest.raises(AuthException) as refused:
                async with state.get_lock(key):
                    pytest.fail("a refused worker got the lock")
            assert refused.value.text  # the reason travels to the worker
            with pytest.raises(AuthException):
                await state.test_lock(key)
        assert server.locks.counts() == (0, 0)
        async with walt.get_lock("locks/w/job", exclusive=False):  # walt's channel still works
            pass


async def test_a_refusal_names_the_key_and_the_right(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server, worker(server.grpc_port, TOKENS["walt"]) as walt:
        with pytest.raises(AuthException) as refused:
            async with walt.get_lock("locks/other"):
                pass
        assert "locks/other" in refused.value.text
        assert "PermissionDenied" in refused.value.text


async def test_a_worker_and_a_statehub_client_exclude_each_other_on_sqlite(
    tmp_path: Path,
) -> None:
    process, ports = start_serve_ports("--data", str(tmp_path / "data"))
    try:
        order: list[str] = []
        async with worker(ports.grpc) as state, AsyncClient("127.0.0.1", ports.tcp) as client:
            statehub = Holder("statehub", lambda: client.get_lock("s"), order)
            await asyncio.wait_for(statehub.granted.wait(), 10)
            momotor = Holder("momotor", lambda: state.get_lock("s", exclusive=False), order)
            await _until_waiting(client, "s", 1)
            await statehub.finish()
            await asyncio.wait_for(momotor.granted.wait(), 10)
            await momotor.finish()
            assert order == ["statehub", "momotor"]
    finally:
        stop(process)


async def _until_waiting(client: AsyncClient, key: str, count: int, timeout: float = 10) -> None:
    """Poll the server's lock list until ``count`` requests wait for ``key``."""

    async def queued() -> bool:
        return any(lock.key == key and lock.waiting == count for lock in await client.locks())

    await eventually(queued, f"{count} waiting for {key!r}", timeout=timeout)


async def test_one_lock_across_two_statehub_servers_on_one_redis(tmp_path: Path) -> None:
    """Several statehub servers over one Redis are one Momotor broker."""
    redis = start_redis(tmp_path / "redis")
    servers: list[tuple[Any, ServedPorts]] = []
    try:
        starting = [asyncio.to_thread(start_serve_ports, "--store", redis.url) for _ in range(2)]
        results = await asyncio.gather(*starting, return_exceptions=True)
        servers.extend(started for started in results if not isinstance(started, BaseException))
        for started in results:
            if isinstance(started, BaseException):
                raise started
        (_, ports_a), (_, ports_b) = servers
        order: list[str] = []
        async with (
            worker(ports_a.grpc) as on_a,
            worker(ports_b.grpc) as on_b,
            AsyncClient("127.0.0.1", ports_b.tcp) as client_b,
        ):
            first = Holder("worker on A", lambda: on_a.get_lock("shared/key"), order)
            await asyncio.wait_for(first.granted.wait(), 10)
            assert await on_b.test_lock("shared/key") is True  # held, seen from B
            assert await client_b.test_lock("shared/key") is False
            second = Holder("worker on B", lambda: on_b.get_lock("shared/key"), order)
            await _until_waiting(client_b, "shared/key", 1)
            third = Holder("client on B", lambda: client_b.get_lock("shared/key"), order)
            await _until_waiting(client_b, "shared/key", 2)
            await first.finish()
            await asyncio.wait_for(second.granted.wait(), 10)
            assert not third.granted.is_set()
            await second.finish()
            await asyncio.wait_for(third.granted.wait(), 10)
            assert await on_a.test_lock("shared/key") is True
            await third.finish()
            assert order == ["worker on A", "worker on B", "client on B"]
            assert await on_a.test_lock("shared/key") is False
            stop(redis.process)  # the lock table is away: a worker is told so
            with pytest.raises(LockFailed):
                async with asyncio.timeout(30), on_a.get_lock("shared/key"):
                    pytest.fail("granted without Redis")
            with pytest.raises(GRPCError) as failed:
                await asyncio.wait_for(on_b.test_lock("shared/key"), 30)
            assert failed.value.status is Status.UNAVAILABLE
    finally:
        for process, _ in servers:
            stop(process)
        stop(redis.process)


def test_the_momotor_benchmark_runs_and_reports_every_figure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from statehub.bench import momotor as bench
    from statehub.cli.bench import GROUPS

    assert GROUPS["momotor"][1] is bench.run
    for name, value in [
        ("ROUNDS", 1),
        ("GRANTS_PER_ROUND", 20),
        ("WARMUP", 2),
        ("WORKERS", 4),
        ("CONTENTION_S", 0.3),
        ("REDIS", False),
    ]:
        monkeypatch.setattr(bench, name, value)
    results = bench.run()
    assert [result.unit for result in results] == ["ms"] * 4 + ["grants/s", "us", "us"] * 2
    assert all(result.figure > 0 for result in results)


async def test_reloaded_identities_end_a_call_whose_token_is_gone(tmp_path: Path) -> None:
    """As a session is ended when its credential no longer authenticates, so is a Momotor
    call: its lock is released for the others."""
    order: list[str] = []
    async with (
        auth_server(tmp_path) as server,
        worker(server.grpc_port, TOKENS["walt"]) as walt,
        worker(server.grpc_port, TOKENS["ada"]) as ada,
    ):
        revoked = Holder("walt", lambda: walt.get_lock("locks/w/r"), order)
        await asyncio.wait_for(revoked.granted.wait(), 10)
        kept = Holder("ada", lambda: ada.get_lock("locks/w/r"), order)
        await eventually(lambda: waiting(server) == 1)
        server.reload_auth(write_identities(tmp_path / "reloaded.yaml", identities(walt="")))
        await asyncio.wait_for(kept.granted.wait(), 10)  # walt's lock was released
        revoked.release.set()
        with pytest.raises(GRPCError) as ended:  # at its release: the call ended already
            await asyncio.wait_for(revoked.task, 10)
        assert ended.value.status is Status.UNAUTHENTICATED
        await kept.finish()
        assert order == ["walt", "ada"]
        with pytest.raises(AuthException):
            await walt.test_lock("locks/w/r")
