"""NanoVer's local mirror of the whole state (``subscribe_all_state_updates``,
``copy_state``, ``lock_state``): a copy one subscription keeps, readable from any thread.

Batches arrive in the client's event loop while a reader in another thread may hold the
mirror still (``hold``, NanoVer's ``lock_state``). The loop never waits for that reader:
a batch that finds the mirror held goes to a backlog, applied in order when the reader
lets go (or with the next batch), so the reader sees one state throughout its block and
nothing is lost.
"""

from __future__ import annotations

import asyncio
import threading
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from statehub.client.connection import Connection
from statehub.client.subscription import Message, Subscription
from statehub.core.values import JsonValue, copy_mapping


class StateMirror:
    """The whole state, kept by one subscription of a client's connection."""

    def __init__(self) -> None:
        self._state: dict[str, JsonValue] = {}
        self._lock = threading.Lock()
        self._backlog: list[Message] = []
        self._backlog_lock = threading.Lock()
        self._subscription: Subscription | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first: asyncio.Future[None] | None = None

    @property
    def started(self) -> bool:
        return self._subscription is not None

    async def start(
        self, connection: Connection, interval: float, timeout: float | None = None
    ) -> None:
        """Subscribe to every key, at most one batch per ``interval`` s; return once the
        mirror holds the first snapshot."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        first: asyncio.Future[None] = loop.create_future()
        self._first = first

        def handler(message: Message) -> None:
            self._apply(message)
            if not first.done():
                first.set_result(None)

        self._subscription = await connection.subscribe(interval, "", handler, timeout=timeout)
        await first

    def fail(self, error: Exception) -> None:
        """A ``start`` still waiting for its first snapshot raises ``error`` (the client was
        closed, or lost its connection for good)."""
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)

    def copy(self) -> dict[str, JsonValue]:
        """A deep copy of the mirror."""
        with self._lock:
            return copy_mapping(self._state)

    @contextmanager
    def hold(self) -> Iterator[Mapping[str, JsonValue]]:
        """Hold the mirror still while the block reads it (a read-only view)."""
        with self._lock:
            yield types.MappingProxyType(self._state)
        with self._backlog_lock:
            if self._backlog and self._loop is not None:
                self._loop.call_soon_threadsafe(self._drain_backlog)

    def _apply(self, message: Message) -> None:
        with self._backlog_lock:
            if not self._lock.acquire(blocking=False):
                self._backlog.append(message)  # a reader holds the mirror
                return
        try:
            backlog, self._backlog = self._backlog, []
            for pending in (*backlog, message):
                _apply_batch(self._state, pending)
        finally:
            self._lock.release()

    def _drain_backlog(self) -> None:
        with self._backlog_lock:
            if not self._backlog or not self._lock.acquire(blocking=False):
                return
        try:
            backlog, self._backlog = self._backlog, []
            for pending in backlog:
                _apply_batch(self._state, pending)
        finally:
            self._lock.release()


def _apply_batch(state: dict[str, JsonValue], message: Message) -> None:
    updates: dict[str, JsonValue] = message.get("updates") or {}
    if message.get("snapshot"):
        state.clear()
    else:
        for key in message.get("removals") or ():
            state.pop(key, None)
    state.update(updates)
