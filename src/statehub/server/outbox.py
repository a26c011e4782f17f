"""What a session has to send: encoded messages, counted in bytes, cut into frames.

Messages are encoded when they are queued, so the session knows how many bytes a client
that does not read is holding on the server, and can stop taking its requests (or
flushing its subscriptions) until the transport has written them.
"""

from __future__ import annotations

import asyncio

from statehub.protocol.codec import join_frame

#: Bytes of a frame's own header (a msgpack array of up to 2**32 messages).
FRAME_HEADER_BYTES = 5


class Outbox:
    """A queue of encoded messages; ``next_frame`` joins as many as fit in one frame.

    An idle session's outbox is three small objects: the futures its waiters await are
    made only while someone waits (an ``asyncio.Event`` would hold a 700-byte deque each).
    """

    __slots__ = ("_closed", "_max_frame_bytes", "_messages", "_queued", "_taken", "queued_bytes")

    def __init__(self, *, max_frame_bytes: int) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._messages: list[bytes] = []
        self.queued_bytes = 0
        self._queued: list[asyncio.Future[None]] = []  # waiting for a message (the writer)
        self._taken: list[asyncio.Future[None]] = []  # waiting for queued bytes to go down
        self._closed = False

    def push(self, encoded: bytes) -> None:
        """Queue one encoded message (ignored once closed)."""
        if self._closed:
            return
        self._messages.append(encoded)
        self.queued_bytes += len(encoded)
        _wake(self._queued)

    def close(self) -> None:
        """Nothing more will be queued; what is queued may still be taken."""
        self._closed = True
        _wake(self._queued)
        _wake(self._taken)

    @property
    def empty(self) -> bool:
        return not self._messages

    async def next_frame(self) -> bytes | None:
        """The next frame to write; None once closed and empty."""
        while not self._messages:
            if self._closed:
                return None
            waiter = _waiter(self._queued)
            try:
                await waiter
            finally:
                _forget(self._queued, waiter)
        messages = self._messages
        budget = self._max_frame_bytes - FRAME_HEADER_BYTES
        size = len(messages[0])
        count = 1
        while count < len(messages) and size + len(messages[count]) <= budget:
            size += len(messages[count])
            count += 1
        taken = messages[:count]
        del messages[:count]
        self.queued_bytes -= size
        _wake(self._taken)
        return join_frame(taken)

    async def wait_below(self, limit: int) -> None:
        """Return once at most ``limit`` bytes are queued (or the outbox is closed)."""
        while self.queued_bytes > limit and not self._closed:
            waiter = _waiter(self._taken)
            try:
                await waiter
            finally:
                _forget(self._taken, waiter)


# A future awaited in place, not a helper coroutine: every idle session's writer waits
# here, and a suspended coroutine would cost each one another frame (about 200 bytes).
def _waiter(waiters: list[asyncio.Future[None]]) -> asyncio.Future[None]:
    """A future that ``_wake(waiters)`` completes."""
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    return waiter


def _forget(waiters: list[asyncio.Future[None]], waiter: asyncio.Future[None]) -> None:
    """Drop ``waiter`` once awaited: a cancelled one leaves no future behind."""
    if waiter in waiters:
        waiters.remove(waiter)


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()
