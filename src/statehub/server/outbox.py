"""What a session has to send: encoded messages, counted in bytes, cut into frames.

Messages are encoded when they are queued, so the session knows how many bytes a client
that does not read is holding on the server, and can stop taking its requests (or
flushing its subscriptions) until the transport has written them.
"""

from __future__ import annotations

import asyncio
from collections import deque

from statehub.protocol.codec import join_frame

#: Bytes of a frame's own header (a msgpack array of up to 2**32 messages).
FRAME_HEADER_BYTES = 5


class Outbox:
    """A queue of encoded messages; ``next_frame`` joins as many as fit in one frame."""

    def __init__(self, *, max_frame_bytes: int) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._messages: deque[bytes] = deque()
        self.queued_bytes = 0
        self._queued = asyncio.Event()
        self._taken = asyncio.Event()
        self._closed = False

    def push(self, encoded: bytes) -> None:
        """Queue one encoded message (ignored once closed)."""
        if self._closed:
            return
        self._messages.append(encoded)
        self.queued_bytes += len(encoded)
        self._queued.set()

    def close(self) -> None:
        """Nothing more will be queued; what is queued may still be taken."""
        self._closed = True
        self._queued.set()
        self._taken.set()

    @property
    def empty(self) -> bool:
        return not self._messages

    async def next_frame(self) -> bytes | None:
        """The next frame to write; None once closed and empty."""
        while not self._messages:
            if self._closed:
                return None
            self._queued.clear()
            await self._queued.wait()
        messages = self._messages
        budget = self._max_frame_bytes - FRAME_HEADER_BYTES
        taken = [messages.popleft()]
        size = len(taken[0])
        while messages and size + len(messages[0]) <= budget:
            size += len(messages[0])
            taken.append(messages.popleft())
        self.queued_bytes -= size
        self._taken.set()
        return join_frame(taken)

    async def wait_below(self, limit: int) -> None:
        """Return once at most ``limit`` bytes are queued (or the outbox is closed)."""
        while self.queued_bytes > limit and not self._closed:
            self._taken.clear()
            await self._taken.wait()
