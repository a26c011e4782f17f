"""Soak: 1,000 clients on a real `statehub serve` for 10 minutes, with churn.

Run by `make soak` (not by `make test`). STATEHUB_SOAK_SECONDS and STATEHUB_SOAK_CLIENTS
change the length and the crowd. Every client holds a lease, a read lock and a
subscription and writes now and then; every second a few clients leave (half-close,
cancel, or their whole channel goes) and new ones take their place. At the end the
server must hold no lease, and its memory must be flat: the last sample within a bound
of the one taken once the crowd had settled.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from pathlib import Path

import grpc
import pytest

from statehub.bench.fleet import SERVE
from support.raw_session import RawSession

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("STATEHUB_SOAK_SECONDS", "600"))
CLIENTS = int(os.environ.get("STATEHUB_SOAK_CLIENTS", "1000"))
CHANNELS = 25
CHURN_PER_SECOND = 0.02
#: Allowed growth of the server's resident memory after the crowd has settled.
MEMORY_GROWTH_BOUND = 0.15


def _resident_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1))


class Crowd:
    def __init__(self, port: int) -> None:
        self.port = port
        self.channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
        self.sessions: dict[int, RawSession] = {}
        self.next_name = 0
        self.rng = random.Random(7)
        self.writes = 0

    async def join(self) -> None:
        name = self.next_name
        self.next_name += 1
        session = RawSession(self.channels[name % CHANNELS])
        await session.hello()
        await session.request("leases", acquire={f"soak/lease/{name}": None})
        await session.request("lock", key=f"soak/lock/{name % 50}", exclusive=False, owner="")
        await session.subscribe(interval=0.1, prefix="soak/value/")
        self.sessions[name] = session

    async def leave(self, name: int) -> None:
        session = self.sessions.pop(name)
        how = self.rng.randrange(3)
        if how == 0:
            await session.call.done_writing()
        elif how == 1:
            session.call.cancel()
        else:  # the whole channel goes, with every session on it: replace the channel
            index = name % CHANNELS
            old = self.channels[index]
            self.channels[index] = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
            for other in [n for n in self.sessions if n % CHANNELS == index]:
                self.sessions.pop(other)
            await old.close(grace=None)
        session._reader.cancel()

    async def write_some(self) -> None:
        for name in self.rng.sample(sorted(self.sessions), min(50, len(self.sessions))):
            await self.sessions[name].send("update", updates={f"soak/value/{name % 200}": name})
            self.writes += 1

    async def close(self) -> None:
        for session in self.sessions.values():
            session.call.cancel()
            session._reader.cancel()
        for channel in self.channels:
            await channel.close(grace=None)


async def _grpc_port(stdout: asyncio.StreamReader) -> int:
    """The gRPC port ``statehub serve`` prints (after its TCP and web lines)."""
    while line := (await asyncio.wait_for(stdout.readline(), 60)).decode():
        if found := re.search(r"^statehub gRPC on \S+:(\d+) ", line):
            return int(found.group(1))
    raise AssertionError("statehub serve ended before printing its gRPC port")


async def test_a_thousand_clients_for_ten_minutes() -> None:
    server = await asyncio.create_subprocess_exec(
        *SERVE, "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = await _grpc_port(server.stdout)
        crowd = Crowd(port)
        for _ in range(CLIENTS):
            await crowd.join()
        started = time.monotonic()
        settled_kib = 0
        samples = []
        while (elapsed := time.monotonic() - started) < SECONDS:
            for name in crowd.rng.sample(sorted(crowd.sessions), int(CLIENTS * CHURN_PER_SECOND)):
                if name in crowd.sessions:
                    await crowd.leave(name)
            while len(crowd.sessions) < CLIENTS:
                await crowd.join()
            await crowd.write_some()
            await asyncio.sleep(1)
            if not settled_kib and elapsed > min(60.0, SECONDS / 5):
                settled_kib = _resident_kib(server.pid)
            samples.append(_resident_kib(server.pid))
        final_kib = _resident_kib(server.pid)
        await crowd.close()

        checker = RawSession(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        await checker.hello()
        for _ in range(150):  # sessions whose channel just closed may still be ending
            if not (leases := (await checker.request("list_leases"))["leases"]):
                break
            await asyncio.sleep(0.2)
        assert leases == [], f"{len(leases)} leases left behind"
        print(
            f"\nsoak: {crowd.next_name} sessions over {SECONDS:.0f} s, {crowd.writes} writes; "
            f"server memory settled {settled_kib} KiB, final {final_kib} KiB, "
            f"peak {max(samples)} KiB"
        )
        assert final_kib <= settled_kib * (1 + MEMORY_GROWTH_BOUND)
        checker.call.cancel()
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
