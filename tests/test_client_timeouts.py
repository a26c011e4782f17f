"""Per-call timeouts: against a frozen server a call fails in time and leaves no trace."""

from __future__ import annotations

import asyncio
import builtins
import re
import signal
import time
from collections.abc import Iterator

import pytest

import statehub
from statehub import AsyncClient, Client
from support.paused_server import PausedServer, paused_server
from support.polling import eventually, eventually_sync

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")

#: What a timed-out call may take beyond its timeout (a loaded test machine).
SLACK_S = 1.0


@pytest.fixture
def server() -> Iterator[PausedServer]:
    with paused_server() as running:
        yield running


def test_the_timeout_error_is_statehubs_and_the_builtin() -> None:
    assert issubclass(statehub.TimeoutError, statehub.StatehubError)
    assert issubclass(statehub.TimeoutError, builtins.TimeoutError)


async def test_calls_to_a_paused_server_time_out_then_work_when_it_resumes(
    server: PausedServer,
) -> None:
    async with AsyncClient(server.url, timeout=0.5) as client:
        await client.set("k", 1)
        server.pause()
        started = time.monotonic()
        with pytest.raises(statehub.TimeoutError, match=rf"'get'.*{re.escape(server.url)}.*0\.5 s"):
            await client.get("k")
        assert 0.5 <= time.monotonic() - started < 0.5 + SLACK_S
        started = time.monotonic()
        with pytest.raises(builtins.TimeoutError, match=r"'update'.* 0\.2 s"):
            await client.set("k", 2, timeout=0.2)  # a call's own timeout wins
        assert 0.2 <= time.monotonic() - started < 0.2 + SLACK_S
        server.resume()
        # The late replies are dropped: each call gets its own answer, nothing else.
        assert await client.get("k", timeout=5) == 2
        assert await client.set("k", 3) > 0 and await client.get("k") == 3
        assert client.connected
        assert client._conn is not None and not client._conn._pending


async def test_a_shorter_timeout_sent_after_a_longer_one_expires_first(
    server: PausedServer,
) -> None:
    async with AsyncClient(server.url, timeout=5) as client:
        server.pause()
        patient = asyncio.ensure_future(client.get("k"))
        started = time.monotonic()
        with pytest.raises(statehub.TimeoutError, match=r"0\.2 s"):
            await client.get("k", timeout=0.2)
        assert time.monotonic() - started < 0.2 + SLACK_S
        assert not patient.done()
        server.resume()
        assert await asyncio.wait_for(patient, 10) is None


async def test_a_timed_out_lock_wait_leaves_no_holder_and_no_waiter(server: PausedServer) -> None:
    async with (
        AsyncClient(server.url) as holder,
        AsyncClient(server.url, timeout=0.3) as waiter,
    ):
        async with holder.get_lock("busy"):
            server.pause()
            for key in ("busy", "free"):  # a wait the server withdraws, a grant given back
                started = time.monotonic()
                with pytest.raises(statehub.TimeoutError, match=rf"lock '{key}'.*0\.5 s"):
                    async with waiter.get_lock(key, timeout=0.2):
                        pytest.fail("a lock was held through a frozen server")
                assert time.monotonic() - started < 0.5 + SLACK_S
            server.resume()

        async def nothing_held_or_waited() -> bool:
            return await holder.locks() == []

        await eventually(nothing_held_or_waited)
        async with waiter.get_lock("busy", timeout=5), waiter.get_lock("free", timeout=5):
            assert [lock.key for lock in await holder.locks()] == ["busy", "free"]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "1"])
async def test_bad_timeouts_are_refused_naming_the_parameter(bad: object) -> None:
    with pytest.raises(ValueError, match="timeout must be None or a finite number"):
        AsyncClient("statehub+tcp://127.0.0.1:1", timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connect_timeout must be"):
        AsyncClient("statehub+tcp://127.0.0.1:1", connect_timeout=bad)  # type: ignore[arg-type]


async def test_no_timeout_waits_as_long_as_it_takes(server: PausedServer) -> None:
    async with AsyncClient(server.url, timeout=0.1) as client:
        server.pause()
        waiting = asyncio.ensure_future(client.set("slow", 1, timeout=None))
        # A call sent after it, on the client's own timeout, has timed out: the first
        # has waited past that timeout, and must still be waiting.
        with pytest.raises(statehub.TimeoutError, match=r"0\.1 s"):
            await client.get("k")
        assert not waiting.done()
        server.resume()
        assert await asyncio.wait_for(waiting, 10) > 0


def test_the_blocking_client_times_out_then_works_when_the_server_resumes(
    server: PausedServer,
) -> None:
    with Client(server.url, timeout=0.5) as client:
        client.set("k", 1)
        server.pause()
        started = time.monotonic()
        with pytest.raises(statehub.TimeoutError, match=rf"'get'.*{re.escape(server.url)}.*0\.5 s"):
            client.get("k")
        assert 0.5 <= time.monotonic() - started < 0.5 + SLACK_S
        with pytest.raises(statehub.TimeoutError, match=r"'update'.* 0\.2 s"):
            client.set("k", 2, timeout=0.2)
        server.resume()
        assert client.get("k", timeout=5) == 2
        assert client.set("k", 3) > 0 and client.get("k") == 3
        assert client.connected


def test_a_timed_out_blocking_lock_wait_leaves_no_holder_and_no_waiter(
    server: PausedServer,
) -> None:
    with Client(server.url) as holder, Client(server.url, timeout=0.3) as waiter:
        with holder.get_lock("busy"):
            server.pause()
            for key in ("busy", "free"):  # a wait the server withdraws, a grant given back
                with (
                    pytest.raises(statehub.TimeoutError, match=rf"lock '{key}'.*0\.5 s"),
                    waiter.get_lock(key, timeout=0.2),
                ):
                    pytest.fail("a lock was held through a frozen server")
            server.resume()
        eventually_sync(lambda: holder.locks() == [])
        with waiter.get_lock("busy", timeout=5), waiter.get_lock("free", timeout=5):
            assert [lock.key for lock in holder.locks()] == ["busy", "free"]
