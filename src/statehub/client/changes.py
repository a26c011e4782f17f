"""What a subscription yields, and the per-stream buffer that coalesces batches."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from statehub.core.change import DictionaryChange


class StateChange(DictionaryChange):
    """A change seen by a subscriber: the revision it brings the state to, and whether it
    is a ``snapshot`` (the whole state under the prefix: drop what you had) or a delta."""

    __slots__ = ("revision", "snapshot")

    def __init__(
        self,
        updates: Mapping[str, Any] | None = None,
        removals: Iterable[str] | None = None,
        *,
        revision: int,
        snapshot: bool,
    ) -> None:
        super().__init__(updates, removals)
        self.revision = revision
        self.snapshot = snapshot

    def __repr__(self) -> str:
        return (
            f"StateChange(revision={self.revision}, snapshot={self.snapshot}, "
            f"updates={self.updates!r}, removals={self.removals!r})"
        )


class _Coalescer:
    """Batches from the server, merged until the consumer takes them.

    A slow consumer never makes the client queue without bound: it gets one change
    holding the latest value of each key. A snapshot replaces everything pending, and a
    delta on top of a pending snapshot is folded into it (still a snapshot).
    """

    __slots__ = (
        "__weakref__",
        "_pending",
        "_removals",
        "_revision",
        "_snapshot",
        "_updates",
    )

    def __init__(self) -> None:
        self._updates: dict[str, Any] = {}
        self._removals: set[str] = set()
        self._snapshot = False
        self._revision = 0
        self._pending = False

    def _merge(self, message: Mapping[str, Any]) -> bool:
        """Fold ``message`` in; False if it brings nothing to tell."""
        updates: dict[str, Any] = message.get("updates") or {}
        removals: list[str] = message.get("removals") or []
        if message.get("snapshot"):
            self._updates = dict(updates)
            self._removals = set()
            self._snapshot = True
        else:
            for key in removals:
                self._updates.pop(key, None)
            if not self._snapshot:
                self._removals.update(removals)
                self._removals.difference_update(updates)
            self._updates.update(updates)
        self._revision = message.get("revision", self._revision)
        if not (message.get("snapshot") or updates or removals):
            return False  # a resume after a reconnect that found nothing new
        self._pending = True
        return True

    def _pop(self) -> StateChange:
        change = StateChange(
            self._updates, self._removals, revision=self._revision, snapshot=self._snapshot
        )
        self._updates, self._removals, self._snapshot, self._pending = {}, set(), False, False
        return change


class CoalescingBuffer(_Coalescer):
    """A ``_Coalescer`` for one asyncio consumer (pushed to in the event loop)."""

    __slots__ = ("_ready",)

    def __init__(self) -> None:
        # Imported here: the blocking client imports this module and need not load asyncio.
        import asyncio

        super().__init__()
        self._ready = asyncio.Event()

    def push(self, message: Mapping[str, Any]) -> None:
        if self._merge(message):
            self._ready.set()

    def wake(self) -> None:
        """Wake a waiting ``take`` without data (the stream is ending)."""
        self._ready.set()

    async def take(self) -> StateChange | None:
        """Wait for a change; None if woken by ``wake`` with nothing pending."""
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
            if not self._pending:
                return None
        return self._pop()


class BlockingCoalescingBuffer(_Coalescer):
    """A ``_Coalescer`` for one consumer thread (pushed to from any thread)."""

    __slots__ = ("_condition", "_woken")

    def __init__(self) -> None:
        super().__init__()
        self._condition = threading.Condition()
        self._woken = False

    def push(self, message: Mapping[str, Any]) -> None:
        with self._condition:
            if self._merge(message):
                self._condition.notify_all()

    def wake(self) -> None:
        """Wake a waiting ``take`` without data (the stream is ending)."""
        with self._condition:
            self._woken = True
            self._condition.notify_all()

    def take(self) -> StateChange | None:
        """Wait for a change; None once woken by ``wake`` with nothing pending."""
        with self._condition:
            while not self._pending:
                if self._woken:
                    return None
                self._condition.wait()
            return self._pop()
