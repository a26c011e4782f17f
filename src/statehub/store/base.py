"""The interface every store implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar, Protocol

from statehub.core.entries import Expectations, KeyFacts
from statehub.core.key_history import HistoryRetention, KeyVersion
from statehub.core.values import JsonValue
from statehub.store.answers import Answer, Completed, failed, settled
from statehub.store.leases import Lease
from statehub.store.locks import InProcessLocks, LockTable

#: The answer of a change that answers nothing (it is immutable, so one serves them all).
_DONE: Completed[None] = Completed(None)

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
    """Where committed state lives: one interface, split by concern as Centrifuge splits
    its engine (``docs/layers.md``, "The store interface").

    - **state and change feed**: ``commit`` is the one atomic step (check leases and
      compare-and-set expectations, apply, assign the next revision); every committed
      change, whoever committed it, reaches the feed given to ``attach``: an in-process
      store delivers it inside ``commit``; a store shared by several servers (Redis) also
      delivers what other servers commit, from a task it runs between ``start`` and
      ``stop``. Callers serialise ``commit`` calls (the state dictionary holds its lock).
    - **leases**: ``change_leases``, ``leases``, ``release_owner``, ``clear_leases``.
    - **read/write locks**: ``lock_table()`` (``store/locks.py``).
    - **command peers**: ``command_peers()`` (``store/peers.py``).

    Each operation has one blocking form, for the state dictionary's threaded API, and
    where event-loop code uses it one ``submit_*`` form that answers an ``asyncio.Future``
    (``store/answers.py``): done at once from an in-process store, the round trip's from
    a shared one. No server code asks which store it has; only the state dictionary, the
    one facade over the store, reads ``shared_by_servers``.
    """

    #: True for a store several servers share (Redis): its commits are round trips
    #: (``submit_commit``, whose futures settle later), and it keeps each key's lifetime
    #: (``ttl``, keys bound to a session) and history itself. False (memory, SQLite): the
    #: state dictionary keeps those in this process and commits under its lock.
    shared_by_servers: ClassVar[bool] = False

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
        """A ``shared_by_servers`` store (which keeps history itself): ``key``'s kept
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

        ``deadlines`` (an in-process store's, written down if it is durable): the wall-clock
        deadline of each updated key that expires; every other updated or removed key has
        none from then on.
        ``at``: the change's wall-clock time, for a store that writes history.

        Raises ``ResourceLockedError`` (and changes nothing) if another owner leases a key,
        then ``ConflictError`` (nothing changed) if a key of ``expect`` (checked by
        ``checked_expectations``) is not at the revision expected. A change left with
        nothing to do (its expectations held) takes no revision: the current one is returned.
        """

    def submit_commit(
        self,
        owner: Hashable,
        updates: dict[str, JsonValue],
        removals: set[str],
        now: float,
        expect: Expectations | None = None,
        bound: Collection[str] | None = None,
        ttl: Mapping[str, float] | None = None,
    ) -> Answer[int]:
        """``commit`` for event-loop code, as a future (a store that commits in batches
        settles each one itself: no task per change). ``bound``: keys of ``updates`` bound
        to ``owner``; ``ttl``: seconds until each such key expires (a ``shared_by_servers``
        store's: the state dictionary keeps them itself for an in-process one, and so
        passes none)."""
        if bound or ttl:
            raise ValueError(f"{type(self).__name__} keeps no ttl or session binding itself")
        return settled(lambda: self.commit(owner, updates, removals, now, expect))

    async def expire_due_async(self, limit: int) -> int:
        """A ``shared_by_servers`` store: remove up to ``limit`` keys whose ttl ran out, in one
        commit; return how many (``limit`` if more are due)."""
        return 0

    async def expiring_async(self, keys: Collection[str]) -> dict[str, float]:
        """A ``shared_by_servers`` store: seconds left of those of ``keys`` that expire."""
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
    ) -> Answer[None]:
        """``change_leases`` for event-loop code: done at once in process, the round trip's
        future for a shared store (no thread waits on it)."""
        try:  # not ``settled``: a lambda per change shows on the session's lease path
            self.change_leases(owner, acquire, release, now)
        except Exception as error:
            return failed(error)
        return _DONE

    @abstractmethod
    def leases(self, now: float) -> list[Lease]:
        """The live leases."""

    def submit_leases(self, now: float) -> Answer[list[Lease]]:
        """``leases`` for event-loop code (a future, as ``submit_lease_change``)."""
        return settled(lambda: self.leases(now))

    @abstractmethod
    def release_owner(self, owner: Hashable) -> None:
        """Release every lease held by ``owner`` (its session ended); a shared store may
        only start doing so (its session cannot wait)."""

    @abstractmethod
    def clear_leases(self) -> None:
        """Release every lease."""

    def submit_clear_leases(self) -> Answer[None]:
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
