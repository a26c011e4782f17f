"""NanoVer's frame relay: simulation runners publish frames, every client gets them at 30 Hz.

A NanoVer simulation now runs as a client of the server (``nanover-server --remote
ws://host:port``): it publishes ``{"frame": {key: value}}`` messages, where values are
packed arrays (``particle.positions`` as little-endian float32 bytes, and so on) or plain
msgpack values. The server merges them into one aggregate frame and relays it, as
NanoVer's own server does (its ``FramePublisher``):

- A published frame with ``frame.index == 0`` (or the first frame ever) starts a new
  sequence: the aggregate is cleared to ``{frame.index: 0, system.simulation.counter: n}``
  (``n`` counts the resets) before the frame is merged in. Every published frame is
  renumbered (``frame.index`` 1, 2, ... within the sequence) and stamped with
  ``server.timestamp`` (the server's monotonic clock, in seconds).
- Merging follows NanoVer's rule: a later frame's keys replace earlier ones; a reset
  (``frame.index == 0``) in the later frame drops everything before it, and a reset in
  either is kept in the merged frame, so a client that gets it starts afresh.

Delivery has the same guarantees as the state broadcast (``nanover_socket.NanoverRoom``):

- 30 times a second at most, the frames merged since the last tick are encoded **once**
  and the same bytes go to every client that is in step;
- a client still writing the previous frame message when the next is due is skipped: it
  leaves the shared stream, and once its write has finished it gets the whole aggregate
  frame (one encoding per tick, shared by every client catching up), which always carries
  ``frame.index == 0`` since it starts with the last reset; then it is in step again. So a
  slow client skips to the latest frame, and the server holds at most one frame message
  per client (a reference to shared bytes, never a queue);
- a new client gets the aggregate frame first, the same way;
- a frame message over the edge's NanoVer message limit (``--nanover-max-message-bytes``,
  NanoVer's 128 MiB: its client closes the connection on a larger one) is not sent and is
  logged; clients get the aggregate again once it is under the limit (after a reset).

The relay is sans-socket: a subscriber is a coroutine function that writes bytes; the
NanoVer socket edge only wires connections in and feeds it the frames they publish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import msgpack

from statehub.core.pacing import SteadyPacer

logger = logging.getLogger(__name__)

FRAME_INDEX = "frame.index"
SIMULATION_COUNTER = "system.simulation.counter"
SERVER_TIMESTAMP = "server.timestamp"
#: NanoVer's ``frame_interval``: frames at most 30 times a second.
FRAME_INTERVAL = 1 / 30

FrameSender = Callable[[bytes], Awaitable[None]]


def merge_frames(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """``later`` over ``earlier``, NanoVer's way: a reset in ``later`` drops ``earlier``,
    and a reset in either is kept in the result."""
    later_resets = later.get(FRAME_INDEX) == 0
    merged = dict(later) if later_resets else {**earlier, **later}
    if later_resets or earlier.get(FRAME_INDEX) == 0:
        merged[FRAME_INDEX] = 0
    return merged


class FrameError(ValueError):
    """A published frame that is not a map with str keys."""


class _Subscriber:
    __slots__ = ("in_step", "send", "writing")

    def __init__(self, send: FrameSender) -> None:
        self.send = send
        #: True while its copy is the aggregate up to the last tick (shared deltas apply).
        self.in_step = False
        self.writing: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self.writing is not None and not self.writing.done()


class FrameRelay:
    """One server's aggregate frame and the clients it is relayed to."""

    def __init__(
        self, *, interval: float = FRAME_INTERVAL, max_message_bytes: int | None = None
    ) -> None:
        self.interval = interval
        #: The largest frame message sent to a client (NanoVer's client closes the
        #: connection on a larger one, 1009): a larger one is not sent, and logged.
        self.max_message_bytes = max_message_bytes
        #: The aggregate frame (packed values, as published); empty before the first frame.
        self.current: dict[str, Any] = {}
        #: Frames merged since the last tick: what in-step clients get next.
        self._pending: dict[str, Any] = {}
        self._next_index = 0
        self._resets = 0
        self._subscribers: dict[object, _Subscriber] = {}
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        #: Frames published and frame messages sent (for metrics and tests).
        self.published = 0
        self.ticks = 0

    # -- publishing ----------------------------------------------------------------------

    def publish(self, frame: object) -> None:
        """Merge a frame a client published; it goes out at the next tick."""
        if type(frame) is not dict:
            raise FrameError(f"'frame' must be a map, got {type(frame).__name__}")
        if not all(type(key) is str for key in frame):
            raise FrameError("a frame's keys must all be str")
        if frame.get(FRAME_INDEX) == 0 or not self.current:
            clear = {FRAME_INDEX: 0, SIMULATION_COUNTER: self._resets}
            self._resets += 1
            self._next_index = 1
            self.current = clear
            self._pending = dict(clear)
        stamped = {**frame, SERVER_TIMESTAMP: time.monotonic(), FRAME_INDEX: self._next_index}
        self._next_index += 1
        self.current = merge_frames(self.current, stamped)
        self._pending = merge_frames(self._pending, stamped)
        self.published += 1
        self._wake.set()

    # -- subscribers ---------------------------------------------------------------------

    def subscribe(self, key: object, send: FrameSender) -> None:
        """Relay frames to ``send`` (keyed by ``key``), the aggregate frame first."""
        self._subscribers[key] = _Subscriber(send)
        self._ensure_ticker()
        if self.current:
            self._wake.set()

    def unsubscribe(self, key: object) -> None:
        subscriber = self._subscribers.pop(key, None)
        if subscriber is not None and subscriber.busy:
            assert subscriber.writing is not None
            subscriber.writing.cancel()
        self._wake.set()  # the ticker ends when nobody is left

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def close(self) -> None:
        """Stop relaying (the server is stopping)."""
        for key in list(self._subscribers):
            self.unsubscribe(key)
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.wait([self._ticker])
            self._ticker = None

    # -- the ticker ----------------------------------------------------------------------

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._run())
            self._ticker.add_done_callback(self._ticker_done)

    @staticmethod
    def _ticker_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("NanoVer frame relay failed", exc_info=task.exception())

    async def _run(self) -> None:
        pacer = SteadyPacer(self.interval)
        while self._subscribers:
            await self._wake.wait()
            await asyncio.sleep(pacer.delay())
            self._wake.clear()
            if self._tick():
                pacer.flushed()

    def _tick(self) -> bool:
        """Send what is due; True if anything was sent."""
        pending, self._pending = self._pending, {}
        shared: bytes | None = self._encoded(pending) if pending else None
        if shared == b"":  # not sent: no copy is the aggregate any more
            for subscriber in self._subscribers.values():
                subscriber.in_step = False
        whole: bytes | None = None
        sent = False
        for subscriber in list(self._subscribers.values()):
            if subscriber.busy:
                if shared is not None:
                    subscriber.in_step = False  # it misses this delta: whole frame later
                continue
            if subscriber.in_step:
                if not shared:
                    continue
                data = shared
            else:
                if not self.current:
                    continue
                if whole is None:
                    whole = self._encoded(self.current)
                if not whole:
                    continue
                data = whole
                subscriber.in_step = True
            subscriber.writing = asyncio.ensure_future(subscriber.send(data))
            subscriber.writing.add_done_callback(partial(self._written, subscriber))
            sent = True
        if sent:
            self.ticks += 1
        return sent

    def _encoded(self, frame: Mapping[str, Any]) -> bytes:
        """``frame`` as a message; empty if it is over ``max_message_bytes``."""
        data = _pack_frame(frame)
        limit = self.max_message_bytes
        if limit is not None and len(data) > limit:
            logger.warning(
                "NanoVer frame message of %d bytes not sent: over the limit of %d bytes "
                "(--nanover-max-message-bytes); clients would close on it",
                len(data),
                limit,
            )
            return b""
        return data

    def _written(self, subscriber: _Subscriber, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.warning("NanoVer frame not sent", exc_info=task.exception())
        # A client that fell behind while writing is owed the whole frame now that its
        # write is done (the others that are behind got it at the last tick). Only this
        # one is looked at: a scan of every client per write was quadratic per tick.
        if not subscriber.in_step:
            self._wake.set()


def _pack_frame(frame: Mapping[str, Any]) -> bytes:
    return msgpack.packb({"frame": frame}, use_bin_type=True)  # type: ignore[no-any-return]
