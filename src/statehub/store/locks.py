"""The read/write-lock part of the store interface, and its in-process implementation.

The server's sessions and edges take read/write locks through one ``LockTable``, whatever
the store: ``InProcessLocks`` (memory and SQLite stores: the locks of this server's
clients, ``core.rwlock.RWLockTable``) or the Redis store's table (shared by every server
on that Redis). Each method has one signature: what may wait on a shared store is a
future (``store/answers.py``); what must not wait (``release_owner``, a session's
synchronous close; ``counts``, a metrics scrape) is synchronous everywhere.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from statehub.core.acquisition import Acquisition
from statehub.core.rwlock import LockHolding, RWLockTable
from statehub.store.answers import Answer, Completed, settled


class LockTable(Protocol):
    """Read/write locks by key, as the server's sessions and edges use them."""

    def acquire(
        self, key: str, owner: Hashable, *, exclusive: bool, timeout: float | None = None
    ) -> Acquisition[int]:
        """Take ``key`` for ``owner``: the request takes its place when this is called (so
        requests keep the order they were made in); await the result for the fence."""

    def release(self, key: str, owner: Hashable, *, exclusive: bool) -> Answer[None]:
        """Give back one hold of ``key`` in that mode (``LockNotOwnedError`` if not held)."""

    def release_owner(self, owner: Hashable) -> None:
        """Release every hold of ``owner`` on every key (or start doing so), at once."""

    def can_acquire(self, key: str, *, exclusive: bool) -> Answer[bool]:
        """True if a new owner could take ``key`` in that mode right now (asked in the
        order of requests)."""

    def held(self, key: str, *, exclusive: bool) -> Answer[bool]:
        """True if some owner holds ``key`` in that mode right now (Momotor's test_lock)."""

    def counts(self) -> tuple[int, int]:
        """(owners holding a lock, requests waiting for one) over every key."""

    def holdings(self) -> Answer[list[LockHolding]]:
        """The keys held right now, sorted by key."""


class InProcessLocks:
    """The ``LockTable`` of a store kept in this process: ``RWLockTable``'s answers,
    completed at once."""

    def __init__(self, table: RWLockTable | None = None) -> None:
        self._table = table if table is not None else RWLockTable()

    def acquire(
        self, key: str, owner: Hashable, *, exclusive: bool, timeout: float | None = None
    ) -> Acquisition[int]:
        return self._table.acquire(key, owner, exclusive=exclusive, timeout=timeout)

    def release(self, key: str, owner: Hashable, *, exclusive: bool) -> Answer[None]:
        return settled(lambda: self._table.release(key, owner, exclusive=exclusive))

    def release_owner(self, owner: Hashable) -> None:
        self._table.release_owner(owner)

    def can_acquire(self, key: str, *, exclusive: bool) -> Answer[bool]:
        return Completed(self._table.can_acquire(key, exclusive=exclusive))

    def held(self, key: str, *, exclusive: bool) -> Answer[bool]:
        return Completed(self._table.held(key, exclusive=exclusive))

    def counts(self) -> tuple[int, int]:
        return self._table.counts()

    def holdings(self) -> Answer[list[LockHolding]]:
        return Completed(self._table.holdings())
