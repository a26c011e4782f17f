"""NanoVer's frame relay (``statehub.web.nanover_frames``): the relay on its own with
senders the test controls, and through the web edge with bare msgpack WebSocket clients
(the real NanoVer client is in tests/test_nanover_client.py)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

from statehub.web.nanover_frames import (
    FRAME_INDEX,
    SERVER_TIMESTAMP,
    SIMULATION_COUNTER,
    FrameRelay,
    merge_frames,
)
from support.polling import eventually
from test_web_nanover import NanoverPeer, nanover_peer, web_server


def _positions(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


class Recorder:
    """A frame subscriber: the frames it was sent, its merged copy; writes may be held."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.copy: dict[str, Any] = {}
        self.release = asyncio.Event()
        self.release.set()

    async def send(self, data: bytes) -> None:
        await self.release.wait()
        frame = msgpack.unpackb(data)["frame"]
        self.frames.append(frame)
        self.copy = merge_frames(self.copy, frame)


def test_merge_follows_nanover_reset_rule() -> None:
    assert merge_frames({"a": 1, FRAME_INDEX: 3}, {"b": 2, FRAME_INDEX: 4}) == {
        "a": 1,
        "b": 2,
        FRAME_INDEX: 4,
    }
    assert merge_frames({"a": 1, FRAME_INDEX: 3}, {"b": 2, FRAME_INDEX: 0}) == {
        "b": 2,
        FRAME_INDEX: 0,
    }
    assert merge_frames({"a": 1, FRAME_INDEX: 0}, {"b": 2, FRAME_INDEX: 5})[FRAME_INDEX] == 0


async def test_frames_are_renumbered_stamped_and_reset() -> None:
    relay = FrameRelay(interval=0.001)
    recorder = Recorder()
    relay.subscribe("r", recorder.send)
    relay.publish({FRAME_INDEX: 0, "particle.positions": _positions(1, 2, 3)})
    relay.publish({FRAME_INDEX: 7, "particle.count": 1})
    await eventually(lambda: recorder.copy.get("particle.count") == 1)
    assert recorder.copy[FRAME_INDEX] == 0  # the sequence began with a reset
    assert recorder.copy[SIMULATION_COUNTER] == 0
    assert recorder.copy["particle.positions"] == _positions(1, 2, 3)
    assert isinstance(recorder.copy[SERVER_TIMESTAMP], float)
    assert relay.current == recorder.copy
    relay.publish({FRAME_INDEX: 0, "other": "x"})
    await eventually(lambda: recorder.copy.get("other") == "x")
    assert "particle.positions" not in recorder.copy  # the reset dropped the old sequence
    assert recorder.copy[SIMULATION_COUNTER] == 1
    relay.publish({"more": 1})
    await eventually(lambda: recorder.frames[-1].get("more") == 1)
    assert recorder.frames[-1][FRAME_INDEX] == 2  # renumbered: 1 after the reset, then 2
    await relay.close()


async def test_one_encoding_per_tick_and_a_slow_client_skips_to_the_latest() -> None:
    relay = FrameRelay(interval=0.01)
    fast, slow = Recorder(), Recorder()
    relay.subscribe("fast", fast.send)
    relay.subscribe("slow", slow.send)
    relay.publish({FRAME_INDEX: 0, "step": 0})
    await eventually(lambda: len(fast.frames) == 1 and len(slow.frames) == 1)
    slow.release.clear()  # its next write hangs, as on a full socket
    for step in range(1, 40):
        relay.publish({"step": step})
        await asyncio.sleep(0.003)
    await eventually(lambda: fast.copy.get("step") == 39)
    assert len(slow.frames) == 1  # one write hangs; nothing queues behind it
    slow.release.set()
    await eventually(lambda: slow.copy.get("step") == 39)
    # It got the write that hung, then the whole frame (a reset: its copy starts afresh).
    assert len(slow.frames) <= 3
    assert slow.frames[-1][FRAME_INDEX] == 0 and slow.frames[-1]["step"] == 39
    assert len(fast.frames) < 40  # merged per tick, not one message per published frame
    await relay.close()


async def test_a_new_subscriber_gets_the_aggregate_frame_first() -> None:
    relay = FrameRelay(interval=0.001)
    first = Recorder()
    relay.subscribe("first", first.send)
    relay.publish({FRAME_INDEX: 0, "topology": [1, 2]})
    relay.publish({"positions": _positions(0.5)})
    await eventually(lambda: "positions" in first.copy)
    late = Recorder()
    relay.subscribe("late", late.send)
    await eventually(lambda: len(late.frames) == 1)
    assert late.frames[0] == relay.current
    assert late.frames[0]["topology"] == [1, 2]
    await relay.close()


def _frames(peer: NanoverPeer) -> list[dict[str, Any]]:
    return [message["frame"] for message in peer.others if "frame" in message]


def _merged(peer: NanoverPeer) -> dict[str, Any]:
    copy: dict[str, Any] = {}
    for frame in _frames(peer):
        copy = merge_frames(copy, frame)
    return copy


async def test_a_published_frame_reaches_every_client_including_the_publisher() -> None:
    async with web_server() as server, nanover_peer(server) as runner, nanover_peer(server) as b:
        positions = _positions(0.1, 0.2, 0.3, 1.0, 1.1, 1.2)
        await runner.send({"frame": {FRAME_INDEX: 0, "particle.positions": positions}})
        await runner.send({"frame": {FRAME_INDEX: 1, "particle.count": 2}})
        for peer in (runner, b):
            await eventually(lambda peer=peer: _merged(peer).get("particle.count") == 2)
            assert _merged(peer)["particle.positions"] == positions  # bin stays bin
        async with nanover_peer(server) as late:
            await eventually(lambda: len(_frames(late)) >= 1)
            assert _frames(late)[0]["particle.positions"] == positions
            assert _frames(late)[0]["particle.count"] == 2


async def test_a_frame_that_is_not_a_map_is_refused_with_an_error() -> None:
    async with web_server() as server, nanover_peer(server) as peer:
        await peer.send({"frame": [1, 2], "state": {"updates": {"k": 1}}})
        error = await peer.next_error()
        assert "frame" in error["message"]
        await eventually(lambda: peer.state == {"k": 1})
        assert not _frames(peer)


async def test_a_frame_message_over_the_limit_is_not_sent() -> None:
    relay = FrameRelay(interval=0.001, max_message_bytes=1000)
    recorder = Recorder()
    relay.subscribe("r", recorder.send)
    relay.publish({FRAME_INDEX: 0, "small": 1})
    await eventually(lambda: recorder.copy.get("small") == 1)
    relay.publish({"big": b"x" * 2000})
    await eventually(lambda: not relay._pending)  # its tick came: nothing was sent
    relay.publish({"more": 1})  # the aggregate is still over the limit: not sent either
    await eventually(lambda: not relay._pending)
    relay.publish({FRAME_INDEX: 0, "after": 1})  # a reset brings the frame under it again
    await eventually(lambda: recorder.copy.get("after") == 1)
    assert all("big" not in frame and "more" not in frame for frame in recorder.frames)
    await relay.close()
