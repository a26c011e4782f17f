"""The interface every store implements."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar, Protocol

from statehub.core.entries import Expectations, KeyFacts
from statehub.core.key_history import HistoryRetention, KeyVersion
from statehub.core.values import JsonValue
from statehub.store.answers import settled
from statehub.store.leases import Lease
from statehub.store.locks import InProcessLocks, LockTable

if TYPE_CHECKING:
    from statehub.store.peers import CommandPeers


class ChangeFeed(Protocol):
    """Where a store delivers committed changes: the state dictionary's content mirror."""

    @property
    def delivered_revision(self) -> int:
        """The last revision delivered (each is delivered once, in revision order)."""

    def committed(self, revision: int, updates: dict[str, JsonValue], removals: set[str]) -> None:
        """Revision ``revision`` was committed; changes may come out of order, each once."""

    def history_lost(
        self,
        epoch: str,
        revision: int,
        content: dict[str, JsonValue],
        facts: dict[str, KeyFacts],
    ) -> None:
        """The history before ``revision`` is gone: start again from ``content``."""

    def holds_swept(self, locks: Mapping[Hashable, list[tuple[str, bool]]]) -> None:
        """This server was cut off long enough for the others to release every lease and
        lock its sessions held: ``locks`` per owner, the (key, exclusive) holds lost."""

    def mod_revision(self, key: str) -> int | None:
        """The revision of ``key``'s last change after every committed change (None: absent).

        For an in-process store checking expectations: it counts changes delivered but not
        yet shown to readers (not yet durable) too. Called with the state's lock held.
        """


class Store(ABC):
    """Committed state, leases, the revision counter, and the change feed.

    ``commit`` (or ``commit_async``) is the one atomic step: check leases and
    compare-and-set expectations, apply, assign the next revision. Every committed
    change, whoever committed it, reaches the feed given to ``attach``: an in-process
    store delivers it inside ``commit``; a store shared by several servers (Redis) also
    delivers what other servers commit, from a task it runs between ``start`` and
    ``stop``. Callers serialise ``commit`` calls (the
    state dictionary holds its lock around them).
    """

    #: True if ``commit`` (and every lease method) completes in this process without
    #: waiting on I/O, so the synchronous path is the fast one; False if they mean a round
    #: trip (``commit_async`` and the other ``*_async`` methods are then the path for
    #: event-loop code).
    commits_in_process: ClassVar[bool] = True
    #: True if the store takes ``deadlines`` in ``commit`` (keys that expire, ``ttl=``):
    #: the in-process stores; the state dictionary refuses a ttl on any other.
    keeps_deadlines: ClassVar[bool] = False
    #: True if the store binds keys to sessions itself (``bound`` in ``submit_commit``;
    #: ``release_owner`` removes them): a store shared by servers (Redis). The in-process
    #: stores leave that to the state dictionary (and ``keeps_deadlines``).
    binds_keys: ClassVar[bool] = False

    _feed: ChangeFeed
    _in_process_locks: InProcessLocks | None = None

    def attach(self, feed: ChangeFeed) -> None:
        """Deliver committed changes to ``feed`` from now on (the state dictionary calls it)."""
        self._feed = feed

    async def start(self) -> None:  # noqa: B027 - in-process stores have nothing to run
        """Start following changes committed elsewhere (in the server's event loop)."""

    async def stop(self) -> None:  # noqa: B027 - in-process stores have nothing to stop
        """Stop following; release what this server holds in a shared store."""

    @abstractmethod
    def load(self) -> tuple[int, dict[str, JsonValue], dict[str, KeyFacts]]:
        """The committed revision, content and each key's facts (``core/entries.py``), read
        when the state dictionary starts (a key without facts counts as created then)."""

    def keep_history(self, retention: HistoryRetention) -> None:  # noqa: B027
        """Keep each key's history within ``retention`` (a durable store writes it)."""

    async def history_async(
        self, key: str, now: float, limit: int | None, since: int | None
    ) -> list[KeyVersion]:
        """A store that keeps history itself (not in process: Redis): ``key``'s kept
        versions, oldest first (see ``StateDictionary.history``)."""
        return []

    def load_history(self) -> list[KeyVersion]:
        """The history kept by a durable store, in revision order; read at start."""
        return []

    def load_deadlines(self) -> dict[str, float]:
        """Each expiring key's deadline (wall-clock seconds) as stored; read at start."""
        return {}

    @property
    @abstractmethod
    def epoch(self) -> str:
        """Names the history revisions belong to: revision N means one change per epoch.

        A reader that saw revision N of another epoch cannot resume from it (a restarted
        in-memory server counts from 0 again) and must start from a snapshot.
        """

    @abstractmethod
    def commit(
        self,
        owner: Hashable,
        updates: dict[str, JsonValue],
        removals: set[str],
        now: float,
        expect: Expectations | None = None,
        deadlines: Mapping[str, float] | None = None,
        at: float | None = None,
    ) -> int:
        """Apply a validated change for ``owner``, deliver it to the feed, return its revision.

        ``deadlines`` (``keeps_deadlines`` stores): the wall-clock deadline of each updated
        key that expires; every other updated or removed key has none from then on.
        ``at``: the change's wall-clock time, for a store that writes history.

        Raises ``ResourceLockedError`` (and changes nothing) if another owner leases a key,
        then ``ConflictError`` (nothing changed) if a key of ``expect`` (checked by
        ``checked_expectations``) is not at the revision expected. A change left with
        nothing to do (its expectations held) takes no revision: the current one is returned.
        """

    async def commit_async(
        self,
        owner: Hashable,
        updates: dict[str, JsonValue],
        removals: set[str],
        now: float,
        expect: Expectations | None = None,
        bound: Collection[str] | None = None,
        ttl: Mapping[str, float] | None = None,
    ) -> int:
        """``commit`` for event-loop code: the feed has the change when this returns.
        ``bound``: keys of ``updates`` bound to ``owner``; ``ttl``: seconds until each
        such key of ``updates`` expires (both for ``binds_keys`` stores only)."""
        return self.commit(owner, updates, removals, now, expect)

    def submit_commit(
        self,
        owner: Hashable,
        updates: dict[str, JsonValue],
        removals: set[str],
        now: float,
        expect: Expectations | None = None,
        bound: Collection[str] | None = None,
        ttl: Mapping[str, float] | None = None,
    ) -> asyncio.Future[int]:
        """``commit_async`` as a future, for event-loop code that wants no task per change
        (a store that commits in batches settles each future itself)."""
        return asyncio.ensure_future(
            self.commit_async(owner, updates, removals, now, expect, bound, ttl)
        )

    async def expire_due_async(self, limit: int) -> int:
        """A ``binds_keys`` store: remove up to ``limit`` keys whose ttl ran out, in one
        commit; return how many (``limit`` if more are due)."""
        return 0

    async def expiring_async(self, keys: Collection[str]) -> dict[str, float]:
        """A ``binds_keys`` store: seconds left of those of ``keys`` that expire."""
        return {}

    @abstractmethod
    def change_leases(
        self,
        owner: Hashable,
        acquire: Mapping[str, float | None],
        release: Iterable[str],
        now: float,
    ) -> None:
        """Release ``release`` always, then acquire all of ``acquire`` or none of it."""

    def submit_lease_change(
        self,
        owner: Hashable,
        acquire: Mapping[str, float | None],
        release: Iterable[str],
        now: float,
    ) -> asyncio.Future[None]:
        """``change_leases`` for event-loop code: done at once in process, the round trip's
        future for a shared store (no thread waits on it)."""
        return settled(lambda: self.change_leases(owner, acquire, release, now))

    @abstractmethod
    def leases(self, now: float) -> list[Lease]:
        """The live leases."""

    def submit_leases(self, now: float) -> asyncio.Future[list[Lease]]:
        """``leases`` for event-loop code (a future, as ``submit_lease_change``)."""
        return settled(lambda: self.leases(now))

    @abstractmethod
    def release_owner(self, owner: Hashable) -> None:
        """Release every lease held by ``owner`` (its session ended); a shared store may
        only start doing so (its session cannot wait)."""

    @abstractmethod
    def clear_leases(self) -> None:
        """Release every lease."""

    def submit_clear_leases(self) -> asyncio.Future[None]:
        """``clear_leases`` for event-loop code (a future, as ``submit_lease_change``)."""
        return settled(self.clear_leases)

    def is_durable(self, revision: int) -> bool:
        """True if ``revision`` may be acknowledged without waiting.

        That is: it is on disk, or the store promises no more than memory (the memory
        store; the SQLite store with durability "memory").
        """
        return True

    def wait_durable(self, revision: int, timeout: float | None = None) -> None:  # noqa: B027
        """Return once ``revision`` is as durable as the store promises.

        A store that keeps nothing (or writes synchronously) returns at once. A durable
        store that commits in groups blocks until the group holding ``revision`` is on
        disk; it raises ``TimeoutError`` after ``timeout`` seconds and
        ``statehub.errors.DurabilityError`` if the write failed.
        """

    async def wait_durable_async(self, revision: int) -> None:  # noqa: B027
        """``wait_durable`` for the running event loop: no thread is held while waiting."""

    def on_durable(self, listener: Callable[[], bool]) -> bool:
        """Call ``listener`` (from any thread) whenever more revisions become durable.

        Returns False if commits are durable at once (``is_durable`` is always true), and
        then never calls it. ``listener`` returns False if it could not act now (its lock
        was busy); the store then calls it again soon, and must never wait for it.
        """
        return False

    def lock_table(self) -> LockTable:
        """The read/write locks of the servers sharing this store (the same table at every
        call): this server's own for an in-process store."""
        if self._in_process_locks is None:
            self._in_process_locks = InProcessLocks()
        return self._in_process_locks

    def command_peers(self) -> CommandPeers | None:
        """The other servers sharing this store, for commands (None: this server alone)."""
        return None

    def close(self) -> None:  # noqa: B027 - most stores have nothing to close
        """Release what the store holds open."""
