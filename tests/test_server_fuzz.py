"""Over 20,000 hostile frames at a real server, over both protocols, while a canary works.

The server must answer every mistake with a documented status (never UNKNOWN), log no
traceback, keep the canary client's writes and subscription whole, and not grow its
memory beyond a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter

import grpc
import pytest

from statehub import AsyncClient, StateServer
from statehub.protocol import SESSION_PATH, decode_batch
from support.hostile_frames import (
    encode,
    hostile_message,
    hostile_nanover_request,
    malformed_frame,
)
from support.polling import DEADLINE, eventually
from support.raw_session import running_server

SESSION_STREAMS = 8
FRAMES_PER_STREAM = 2_000
MALFORMED_STREAMS = 400
NANOVER_CALLS = 4_000
#: Growth of the test process's resident memory (server and clients) allowed by the run.
MEMORY_BOUND_BYTES = 400 * 1024 * 1024


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def _hostile_session(
    port: int, seed: int, statuses: Counter[str], unknown: list[object]
) -> None:
    rng = random.Random(seed)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(SESSION_PATH)()

        async def read_replies() -> None:
            while (frame := await call.read()) is not grpc.aio.EOF:
                for message in decode_batch(frame):
                    if "error" in message:
                        statuses[message["error"]["status"]] += 1
                        if message["error"]["status"] == "UNKNOWN":
                            unknown.append(message)
                    elif "ok" in message:
                        statuses["OK"] += 1

        reader = asyncio.ensure_future(read_replies())
        next_id = 1
        if rng.random() < 0.8:
            await call.write(encode([{"id": 0, "op": "hello", "token": None, "client": "fuzz"}]))
        for _ in range(FRAMES_PER_STREAM):
            batch = []
            for _ in range(rng.randrange(1, 4)):
                batch.append(hostile_message(rng, next_id))
                next_id += 1
            await call.write(encode(batch))
        await call.done_writing()
        await asyncio.wait_for(reader, 60)
        code = await call.code()
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), code


async def _malformed_streams(port: int, seed: int, statuses: Counter[str]) -> None:
    rng = random.Random(seed)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for _ in range(MALFORMED_STREAMS):
            call = channel.stream_stream(SESSION_PATH)()
            await call.write(malformed_frame(rng))
            await call.done_writing()
            # Read as a client does: the server's last message (why it ends the session)
            # goes before the status, and the server gives a client that takes no
            # message a grace (transport.FAILED_WRITE_GRACE) before closing anyway.
            with contextlib.suppress(grpc.aio.AioRpcError):
                while await asyncio.wait_for(call.read(), DEADLINE) is not grpc.aio.EOF:
                    pass
            code = await asyncio.wait_for(call.code(), DEADLINE)
            statuses[f"stream {code.name}"] += 1
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), code


async def _hostile_nanover_calls(port: int, seed: int, statuses: Counter[str]) -> None:
    rng = random.Random(seed)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for _ in range(NANOVER_CALLS // 8):
            calls = [hostile_nanover_request(rng) for _ in range(8)]
            results = await asyncio.gather(
                *(channel.unary_unary(method)(request) for method, request in calls),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, grpc.aio.AioRpcError):
                    statuses[f"nanover {result.code().name}"] += 1
                    assert result.code() != grpc.StatusCode.UNKNOWN, result.details()
                elif isinstance(result, BaseException):
                    raise result
                else:
                    statuses["nanover OK"] += 1


async def _canary(server: StateServer, stop: asyncio.Event) -> int:
    """Writes and watches its own keys throughout; returns how many writes it made."""
    async with AsyncClient("127.0.0.1", server.port) as client:
        changes = client.subscribe(prefix="canary/")
        await anext(changes)
        seen: dict[str, object] = {}
        written = 0
        while not stop.is_set() or written < 20:
            key = f"canary/{written}"
            await asyncio.wait_for(client.set(key, written), DEADLINE)
            written += 1
            while key not in seen:
                change = await asyncio.wait_for(anext(changes), DEADLINE)
                seen.update(change.updates)
            await asyncio.sleep(0.01)
        assert seen == {f"canary/{i}": i for i in range(written)}
        await changes.aclose()
        return written


async def test_hostile_frames_hurt_nobody(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    statuses: Counter[str] = Counter()
    unknown: list[object] = []
    memory_before = _resident_bytes()
    async with running_server() as server:
        stop = asyncio.Event()
        canary = asyncio.ensure_future(_canary(server, stop))
        try:
            await asyncio.gather(
                *(
                    _hostile_session(server.grpc_port, seed, statuses, unknown)
                    for seed in range(SESSION_STREAMS)
                ),
                _malformed_streams(server.grpc_port, 100, statuses),
                _hostile_nanover_calls(server.grpc_port, 200, statuses),
            )
        finally:
            stop.set()
        writes = await asyncio.wait_for(canary, 60)
        assert writes >= 20
        await eventually(lambda: not server.hub.sessions)
    frames = SESSION_STREAMS * FRAMES_PER_STREAM + MALFORMED_STREAMS + NANOVER_CALLS
    assert frames >= 20_000
    assert not unknown, unknown[:3]
    assert statuses["INVALID_ARGUMENT"] > 1_000 and statuses["OK"] > 1_000, statuses
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert not tracebacks, [record.getMessage() for record in tracebacks[:3]]
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors[:3]]
    assert _resident_bytes() - memory_before < MEMORY_BOUND_BYTES
