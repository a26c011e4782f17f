"""What a subscription yields, and the per-stream buffer that coalesces batches."""

from __future__ import annotations

import asyncio
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


class CoalescingBuffer:
    """Batches from the server, merged until the consumer takes them.

    A slow consumer never makes the client queue without bound: it gets one change
    holding the latest value of each key. A snapshot replaces everything pending, and a
    delta on top of a pending snapshot is folded into it (still a snapshot).
    """

    __slots__ = (
        "__weakref__",
        "_pending",
        "_ready",
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
        self._ready = asyncio.Event()

    def push(self, message: Mapping[str, Any]) -> None:
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
            return  # a resume after a reconnect that found nothing new: nothing to tell
        self._pending = True
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
        change = StateChange(
            self._updates, self._removals, revision=self._revision, snapshot=self._snapshot
        )
        self._updates, self._removals, self._snapshot, self._pending = {}, set(), False, False
        return change
