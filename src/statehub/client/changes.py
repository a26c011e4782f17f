"""What a subscription yields, and the per-stream buffer that coalesces batches."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from statehub.core.change import DictionaryChange


@dataclass(frozen=True, slots=True)
class HoldsLost:
    """Leases and read/write locks this client held and no longer does, and why: an
    admin force-released them, the server was cut off from the shared store and swept,
    or the session ended with the connection. What they protected may change under you."""

    leases: tuple[str, ...]
    locks: tuple[str, ...]
    reason: str

    def and_then(self, later: HoldsLost) -> HoldsLost:
        """Both losses in one (a consumer that had not looked yet learns of each)."""
        reason = self.reason if later.reason == self.reason else f"{self.reason}; {later.reason}"
        return HoldsLost(
            tuple(sorted({*self.leases, *later.leases})),
            tuple(sorted({*self.locks, *later.locks})),
            reason,
        )


class StateChange(DictionaryChange):
    """A change seen by a subscriber: the revision it brings the state to, and whether it
    is a ``snapshot`` (the whole state under the prefix: drop what you had) or a delta.

    ``holds_lost`` is set on the first change a stream yields after the client learned it
    lost leases or locks (``HoldsLost``), in order with the data: a consumer that acts on
    what it sees under a lease learns there, at the point where it happened, that it
    no longer holds it. Such a change may carry no updates at all.
    """

    __slots__ = ("holds_lost", "revision", "snapshot")

    def __init__(
        self,
        updates: Mapping[str, Any] | None = None,
        removals: Iterable[str] | None = None,
        *,
        revision: int,
        snapshot: bool,
        holds_lost: HoldsLost | None = None,
    ) -> None:
        super().__init__(updates, removals)
        self.revision = revision
        self.snapshot = snapshot
        self.holds_lost = holds_lost

    def __repr__(self) -> str:
        lost = f", holds_lost={self.holds_lost!r}" if self.holds_lost is not None else ""
        return (
            f"StateChange(revision={self.revision}, snapshot={self.snapshot}, "
            f"updates={self.updates!r}, removals={self.removals!r}{lost})"
        )


class _Coalescer:
    """Batches from the server, merged until the consumer takes them.

    A slow consumer never makes the client queue without bound: it gets one change
    holding the latest value of each key. A snapshot replaces everything pending, and a
    delta on top of a pending snapshot is folded into it (still a snapshot).
    """

    __slots__ = (
        "__weakref__",
        "_holds_lost",
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
        self._holds_lost: HoldsLost | None = None

    def _mark(self, lost: HoldsLost) -> None:
        """The next change taken tells of ``lost`` (with whatever data is pending)."""
        self._holds_lost = lost if self._holds_lost is None else self._holds_lost.and_then(lost)
        self._pending = True

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
            self._updates,
            self._removals,
            revision=self._revision,
            snapshot=self._snapshot,
            holds_lost=self._holds_lost,
        )
        self._updates, self._removals, self._snapshot, self._pending = {}, set(), False, False
        self._holds_lost = None
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

    def mark(self, lost: HoldsLost) -> None:
        self._mark(lost)
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

    def mark(self, lost: HoldsLost) -> None:
        with self._condition:
            self._mark(lost)
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
