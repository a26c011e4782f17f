"""Many concurrent subscribers on one server: a task each, not a thread each.

NanoVer held a worker thread per subscription stream, so 128 workers capped it at 128
subscribers. statehub must serve at least 1,000.
"""

from __future__ import annotations

import asyncio

import grpc

from statehub import DictionaryChange, StateServer
from support.raw_session import RawSession

SUBSCRIBERS = 1_000
CHANNELS = 10  # several connections, as many clients would have


async def test_a_thousand_concurrent_subscribers_get_snapshot_and_changes() -> None:
    with StateServer(address="127.0.0.1", port=0) as server:
        server.update_state(None, DictionaryChange({"scene": "start"}))
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") for _ in range(CHANNELS)
        ]
        sessions = [RawSession(channels[i % CHANNELS]) for i in range(SUBSCRIBERS)]
        try:

            async def open_subscription(session: RawSession) -> dict[str, object]:
                hello, subscribe = await session.send_many(
                    [
                        {"op": "hello", "token": None, "client": "scale"},
                        {"op": "subscribe", "interval": 0.0, "prefix": "", "since": None},
                    ]
                )
                await session.reply(hello, timeout=60)
                sub = (await session.reply(subscribe, timeout=60))["sub"]
                return await session.next_batch(sub, timeout=60)

            snapshots = await asyncio.gather(*(open_subscription(s) for s in sessions))
            assert all(s["snapshot"] and s["updates"] == {"scene": "start"} for s in snapshots)
            assert len(server.hub.sessions) == SUBSCRIBERS

            revision = server.update_state(None, DictionaryChange({"scene": "next"}))
            deltas = await asyncio.gather(
                *(session.next_batch(1, timeout=60) for session in sessions)
            )
            assert all(d["updates"] == {"scene": "next"} for d in deltas)
            assert all(d["revision"] == revision for d in deltas)
        finally:
            await asyncio.gather(*(session.close() for session in sessions))
            await asyncio.gather(*(channel.close() for channel in channels))
