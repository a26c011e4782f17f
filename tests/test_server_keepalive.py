"""A client that stops answering (a frozen process, a dead peer) loses its session.

The client process is stopped with SIGSTOP: its TCP connection stays open, but it no
longer answers HTTP/2 pings (gRPC) or the session's heartbeat pings (plain TCP), so only
keepalive can notice. With a short keepalive its leases and read/write locks must be
released within a few seconds, while a live client that is merely idle keeps them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from statehub import AsyncClient, Client
from statehub.server.session import Session, SessionObserver
from support.polling import eventually
from support.raw_session import connected, running_server

CLIENT = """
import sys, threading, grpc
from statehub.protocol import SESSION_PATH, decode_batch, encode_batch

forever = threading.Event()

def requests():
    yield encode_batch([
        {"id": 1, "op": "hello", "token": "sleeper"},
        {"id": 2, "op": "leases", "acquire": {"k": None}},
        {"id": 3, "op": "lock", "key": "L", "exclusive": True, "owner": ""},
    ])
    forever.wait()

channel = grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}")
replies = channel.stream_stream(SESSION_PATH)(requests())  # kept: dropping it cancels
answered = 0
for frame in replies:
    answered += len(decode_batch(frame))
    if answered == 3:
        break
print("ready", flush=True)
forever.wait()
"""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
async def test_a_silent_peer_is_dropped_and_its_leases_and_locks_released() -> None:
    async with running_server(keepalive_time=1.0, keepalive_timeout=1.0) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, str(server.grpc_port), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line.strip() == b"ready"
            assert [lease.key for lease in server.state.leases()] == ["k"]
            os.kill(process.pid, signal.SIGSTOP)
            async with connected(server) as waiter:
                granted = await waiter.send("lock", key="L", exclusive=True, owner="")
                await eventually(lambda: not server.state.leases(), timeout=15)
                assert set(await waiter.reply(granted, timeout=15)) == {"fence"}
        finally:
            process.kill()
            await process.wait()


# -- plain TCP: the session's own heartbeat ----------------------------------------------

#: A blocking client in a process of its own over plain TCP: takes a lease, says "ready",
#: then leaves its threads idle (the reading thread answers the server's pings).
TCP_CLIENT = """
import sys, threading
from statehub import Client

client = Client(sys.argv[1])
assert client.attempt_update_locks({"held": 60})
print("ready", flush=True)
threading.Event().wait()
"""

#: Seconds of silence before the server pings, and seconds it waits for an answer.
KEEPALIVE = 0.5
KEEPALIVE_TIMEOUT = 0.5
BOUND = KEEPALIVE + KEEPALIVE_TIMEOUT


class FramesHeard(SessionObserver):
    """When each session's frames reached the server: an idle client's are its pongs."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def frame_received(self, session: Session, size: int) -> None:
        self.times.setdefault(session.id, []).append(time.monotonic())


def _heard_across(heard: FramesHeard, session: str | None, bounds: int, since: float) -> bool:
    """The server heard ``session`` at least once in each of ``bounds`` whole bounds after
    ``since``: the client answered that many pings while nothing else came from it."""
    times = [t for t in heard.times.get(session or "", []) if t > since]
    return len(times) >= bounds and times[-1] - since >= bounds * KEEPALIVE


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
async def test_a_frozen_tcp_client_is_dropped_within_the_bound_and_its_lease_released() -> None:
    async with running_server(
        keepalive_time=KEEPALIVE, keepalive_timeout=KEEPALIVE_TIMEOUT
    ) as server:
        url = f"statehub://127.0.0.1:{server.tcp_port}"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", TCP_CLIENT, url, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line.strip() == b"ready"
            assert [lease.key for lease in server.state.leases()] == ["held"]
            os.kill(process.pid, signal.SIGSTOP)  # its kernel still ACKs: only a ping tells
            stopped = time.monotonic()
            # within the bound, plus the scheduling slack of a busy test machine
            await eventually(lambda: not server.state.leases(), timeout=BOUND + 5)
            assert time.monotonic() - stopped >= KEEPALIVE  # dropped by the heartbeat
            assert not server.hub.sessions
        finally:
            process.kill()
            await process.wait()


async def test_an_idle_blocking_client_holding_a_lease_is_kept_across_several_bounds() -> None:
    async with running_server(
        keepalive_time=KEEPALIVE, keepalive_timeout=KEEPALIVE_TIMEOUT
    ) as server:
        heard = FramesHeard()
        server.hub.observer = heard
        client = await asyncio.to_thread(Client, f"statehub://127.0.0.1:{server.tcp_port}")
        try:
            assert await asyncio.to_thread(client.attempt_update_locks, {"held": 60})
            session, since = client.session, time.monotonic()
            # Nothing is called meanwhile: only the reading thread's pongs reach the server.
            await eventually(lambda: _heard_across(heard, session, 4, since), timeout=30)
            assert [(lease.key, lease.owner) for lease in server.state.leases()] == [
                ("held", client.token)
            ]
            assert client.session == session and client.connected
        finally:
            await asyncio.to_thread(client.close)


async def test_an_idle_async_client_holding_a_lease_is_kept_across_several_bounds() -> None:
    async with running_server(
        keepalive_time=KEEPALIVE, keepalive_timeout=KEEPALIVE_TIMEOUT
    ) as server:
        heard = FramesHeard()
        server.hub.observer = heard
        async with AsyncClient(f"statehub://127.0.0.1:{server.tcp_port}") as client:
            assert await client.attempt_update_locks({"held": 60})
            session, since = client.session, time.monotonic()
            await eventually(lambda: _heard_across(heard, session, 4, since), timeout=30)
            assert [lease.key for lease in server.state.leases()] == ["held"]
            assert client.session == session


async def test_an_idle_blocking_client_holding_nothing_is_dropped_and_reconnects_on_a_call() -> (
    None
):
    async with running_server(
        keepalive_time=KEEPALIVE, keepalive_timeout=KEEPALIVE_TIMEOUT
    ) as server:
        url = f"statehub://127.0.0.1:{server.tcp_port}"
        client = await asyncio.to_thread(Client, url)
        try:
            await asyncio.to_thread(client.set, "k", 1)
            first = client.session
            # Nobody reads for it: the server's ping goes unanswered and it is dropped.
            await eventually(lambda: not server.hub.sessions, timeout=BOUND + 5)
            assert await asyncio.to_thread(client.get, "k") == 1  # no error: a new session
            assert client.session != first
            assert [session.id for session in server.hub.sessions] == [client.session]
        finally:
            await asyncio.to_thread(client.close)


async def test_a_call_refused_for_silence_runs_on_a_new_session() -> None:
    """The race: the server drops the session just as a call goes out. Its
    ``HeartbeatTimeoutError`` says the request never ran, so the client sends it again."""
    async with running_server(
        keepalive_time=KEEPALIVE, keepalive_timeout=KEEPALIVE_TIMEOUT
    ) as server:
        client = await asyncio.to_thread(Client, f"statehub://127.0.0.1:{server.tcp_port}")
        try:
            first = client.session
            await eventually(lambda: not server.hub.sessions, timeout=BOUND + 5)
            # As if the drop's last frame had not arrived yet when the call was checked.
            client._session._last_heard = time.monotonic()
            assert await asyncio.to_thread(client.set, "k", 2) is not None
            assert client.session != first
            assert server.state.copy_content() == {"k": 2}
        finally:
            await asyncio.to_thread(client.close)
