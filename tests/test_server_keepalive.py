"""A client that stops answering (a frozen process, a dead peer) loses its session.

The client process is stopped with SIGSTOP: its TCP connection stays open, but it no
longer answers HTTP/2 pings, so only keepalive can notice. With keepalive 1 s + 1 s its
leases and read/write locks must be released within a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

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
