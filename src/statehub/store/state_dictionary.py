"""StateDictionary: the shared key/value state with atomic changes under per-key leases."""

from __future__ import annotations

import dataclasses
import time
from asyncio import ensure_future
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from statehub.core.buffers import (
    DEFAULT_LOG_LENGTH,
    DEFAULT_VALUE_LIMITS,
    DictionaryChangeBuffer,
    DictionaryChangeMultiView,
    KeyFilter,
    validated_change,
)
from statehub.core.change import DictionaryChange
from statehub.core.entries import Entry, Expectations, KeyFacts, checked_expectations
from statehub.core.events import Event
from statehub.core.expiry import (
    EXPIRY,
    EXPIRY_BATCH,
    SESSION_END,
    Deadlines,
    checked_ephemeral,
    checked_ttl,
)
from statehub.core.key_history import HistoryRetention, KeyHistory, KeyVersion
from statehub.core.limits import ValueSizeLimits
from statehub.core.values import JsonValue, check_duration, check_key, copy_mapping, copy_value
from statehub.errors import ObjectFrozenError
from statehub.store.answers import Answer, Completed, failed, settled
from statehub.store.base import Store
from statehub.store.leases import Lease
from statehub.store.memory import MemoryStore

Clock = Callable[[], float]
#: A key bound to no one (owners may be None).
_UNBOUND = object()


def check_token(access_token: object) -> Hashable:
    """Access tokens identify owners, so they must be hashable (None is one of its own)."""
    try:
        hash(access_token)
    except TypeError:
        raise TypeError(
            f"access token must be hashable (a str, say), got {type(access_token).__name__}"
        ) from None
    return access_token


def _lease_change(
    access_token: object,
    acquire: Mapping[str, float | None] | None,
    release: Iterable[str] | None,
) -> tuple[Hashable, dict[str, float | None], list[str]]:
    """``update_locks``'s arguments, checked."""
    owner = check_token(access_token)
    durations = {check_key(key): check_duration(key, s) for key, s in (acquire or {}).items()}
    return owner, durations, [check_key(key) for key in release or ()]


class StateDictionary:
    """A key/value store many writers share, with atomic multi-key changes and leases.

    Every committed change gets the next revision number. ``clock`` (monotonic seconds)
    decides lease expiry, ``wall_clock`` (seconds since the epoch, as durable stores keep
    them) the expiry of keys written with a ttl; tests pass fake ones.
    """

    def __init__(
        self,
        *,
        store: Store | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        log_length: int = DEFAULT_LOG_LENGTH,
        history: HistoryRetention | None = None,
        value_limits: ValueSizeLimits | None = None,
    ) -> None:
        self._store = store if store is not None else MemoryStore()
        #: The largest value each key may hold (every edge's writes are checked here).
        self.value_limits = value_limits if value_limits is not None else DEFAULT_VALUE_LIMITS
        self._views = DictionaryChangeMultiView(log_length=log_length)
        self._lock = self._views.lock
        self._early: dict[int, tuple[dict[str, JsonValue], set[str]]] = {}
        self.clock = clock
        self.wall_clock = wall_clock
        revision, content, facts = self._store.load()
        with self._lock:
            self._views.load(content, revision, facts)
        self._history = KeyHistory(history or HistoryRetention())
        self._keeps_history = self._history.enabled
        if self._history.enabled:
            self._store.keep_history(self._history.retention)
            self._history.load(self._store.load_history())
        #: Keys written as ephemeral: key -> owner, and owner -> keys.
        self._bound_owner: dict[str, Hashable] = {}
        self._bound_keys: dict[Hashable, set[str]] = {}
        self._history_revision = revision
        self._deadlines = Deadlines(
            {key: at for key, at in self._store.load_deadlines().items() if key in content}
        )
        #: The deadlines' own dict: its truth value is the cheap "does any key expire?".
        self._deadline_of = self._deadlines.live
        # Changes committed to the store but not yet durable: readers (gets, snapshots,
        # subscribers) see a change only once the store has it on disk, so a write that
        # fails never shows (docs/durable-state.md). ``_latest`` says, for keys they touch,
        # whether the newest of them leaves the key present, for the next change's checks.
        self._unpublished: deque[tuple[int, dict[str, JsonValue], set[str]]] = deque()
        self._latest: dict[str, tuple[int, bool]] = {}
        self._deferred = self._store.on_durable(self._publish_from_store)
        #: The last revision the store delivered (applied, or held until durable).
        self._delivered = revision
        #: Invoked after each change committed here with ``access_token=`` and ``change=``.
        self.content_updated = Event()
        #: Invoked (no arguments) when the store lost its history and the content was
        #: reloaded: revisions restart, so every subscriber has to start from a snapshot.
        self.history_reset = Event()
        #: Invoked with ``locks=`` (per owner, the (key, exclusive) holds lost) when the
        #: store's other servers released every lease and lock of this server's sessions
        #: (it was cut off from them longer than they wait): see ``ChangeFeed.holds_swept``.
        self.holds_lost = Event()
        self._store.attach(self)

    @property
    def revision(self) -> int:
        """The revision of the last committed change (0 before any)."""
        return self._views.revision

    @property
    def epoch(self) -> str:
        """Names the history that ``revision`` counts in (see ``Store.epoch``)."""
        return self._store.epoch

    @property
    def store(self) -> Store:
        """Where committed changes live (for what reports on durability, such as metrics)."""
        return self._store

    @property
    def views(self) -> DictionaryChangeMultiView:
        """The change views of this dictionary (for subscribers)."""
        return self._views

    def update_state(
        self,
        access_token: object,
        change: DictionaryChange,
        *,
        expect: Mapping[str, int | None] | None = None,
        ttl: Mapping[str, float] | None = None,
        ephemeral: Iterable[str] | None = None,
    ) -> int:
        """Apply every update and removal in ``change``, or none of them.

        ``ephemeral``: keys of the change bound to ``access_token``: ``release_owner``
        (which a server calls when the session ends, however it ends) removes them, in one
        commit. A later write of such a key without ``ephemeral``, by anyone, unbinds it.

        ``ttl``: per key the change sets, seconds until the state removes it (a normal
        commit, see ``expire_due``); a key set without one no longer expires. A ttl that
        is not a finite number > 0, or on a key the change does not set, is ``ValueError``.

        ``expect`` (compare-and-set): per key the change touches, the revision of its last
        change it must still have (``Entry.mod_revision``), or None: it must not exist.
        Raises ``ResourceLockedError`` if another token leases any key, ``ConflictError``
        (naming each key and its revision now) if an expectation fails, ``ValueError`` for
        an expectation on a key the change does not touch, ``TypeError`` for a value that
        is not JSON-like, ``ObjectFrozenError`` once frozen. Returns the revision of the
        change (the current one if the change is empty).
        """
        owner = check_token(access_token)
        updates, removals, expectations = _checked_change(change, expect, self.value_limits)
        ttls = checked_ttl(ttl, updates) if ttl else None
        bound = checked_ephemeral(ephemeral, updates) if ephemeral else None
        if (ttls or bound) and self._store.shared_by_servers:
            self._refuse_blocking_lifetimes(ttls or {}, bound or set())
        with self._lock:
            if self._views.frozen:
                raise ObjectFrozenError("cannot update a frozen state dictionary")
            if removals:
                removals = self._present(removals)
            if not (updates or removals or expectations):
                return self._views.revision
            # The plain write (no ttl, no binding, no history) stays as fast as before.
            now = self.wall_clock() if (ttls or bound or self._keeps_history) else None
            deadlines = stored = None
            if ttls or bound:
                assert now is not None
                deadlines = {key: now + seconds for key, seconds in (ttls or {}).items()}
                # A durable store keeps a bound key with deadline 0: its session cannot
                # outlive the process, so a restart finds it due and removes it.
                stored = {**deadlines, **dict.fromkeys(bound, 0.0)} if bound else deadlines
            revision = self._store.commit(
                owner, updates, removals, self.clock(), expectations or None, stored or None, now
            )
            if deadlines or self._deadline_of:
                self._track_deadlines(updates, removals, deadlines or {})
            if bound or self._bound_owner:
                self._track_bindings(owner, updates, removals, bound or set())
            if self._keeps_history and revision > self._history_revision:
                assert now is not None
                self._history_revision = revision
                self._history.record(revision, now, owner, updates, removals)
        if self.content_updated.has_callbacks:
            self.content_updated.invoke(
                access_token=access_token, change=DictionaryChange(updates, removals)
            )
        return revision

    async def update_state_async(
        self,
        access_token: object,
        change: DictionaryChange,
        *,
        expect: Mapping[str, int | None] | None = None,
        ttl: Mapping[str, float] | None = None,
        ephemeral: Iterable[str] | None = None,
    ) -> int:
        """``update_state`` for event-loop code: no thread waits while the store commits.

        When it returns, the change is in this dictionary's content (read your writes).
        """
        return await self.submit_update(
            access_token, change, expect=expect, ttl=ttl, ephemeral=ephemeral
        )

    def submit_update(
        self,
        access_token: object,
        change: DictionaryChange,
        *,
        expect: Mapping[str, int | None] | None = None,
        ttl: Mapping[str, float] | None = None,
        ephemeral: Iterable[str] | None = None,
    ) -> Answer[int]:
        """``update_state`` for event-loop code: a future of the revision, done at once if
        the store commits in process (with the change's error, if it was refused), else
        settled by the store in the order changes were submitted. Event-loop code that
        wants no task per change reads ``done()`` first.
        """
        if not self._store.shared_by_servers:
            try:  # not ``settled``: a lambda per write shows on the session's write path
                return Completed(
                    self.update_state(
                        access_token, change, expect=expect, ttl=ttl, ephemeral=ephemeral
                    )
                )
            except Exception as error:
                return failed(error)
        try:
            return self._submit_to_shared_store(access_token, change, expect, ttl, ephemeral)
        except Exception as error:  # refused before it was sent: answered as the store's are
            return failed(error)

    def _submit_to_shared_store(
        self,
        access_token: object,
        change: DictionaryChange,
        expect: Mapping[str, int | None] | None,
        ttl: Mapping[str, float] | None,
        ephemeral: Iterable[str] | None,
    ) -> Answer[int]:
        owner = check_token(access_token)
        updates, removals, expectations = _checked_change(change, expect, self.value_limits)
        bound = checked_ephemeral(ephemeral, updates) if ephemeral else set()
        ttls = checked_ttl(ttl, updates) if ttl else {}
        with self._lock:
            if self._views.frozen:
                raise ObjectFrozenError("cannot update a frozen state dictionary")
            if not (updates or removals or expectations):
                return Completed(self._views.revision)
        committed = self._store.submit_commit(
            owner, updates, removals, self.clock(), expectations or None, bound or None, ttls
        )
        if self.content_updated.has_callbacks:

            def announce(done: Answer[int]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self.content_updated.invoke(
                        access_token=access_token, change=DictionaryChange(updates, removals)
                    )

            committed.add_done_callback(announce)
        return committed

    # -- keys that expire ----------------------------------------------------------------

    def _track_deadlines(
        self, updates: dict[str, JsonValue], removals: set[str], deadlines: dict[str, float]
    ) -> None:
        """After a commit (lock held): a key set with a ttl expires, any other touched
        key no longer does."""
        tracked = self._deadlines
        if not (tracked or deadlines):
            return
        for key in updates:
            at = deadlines.get(key)
            if at is None:
                tracked.clear(key)
            else:
                tracked.set(key, at)
        for key in removals:
            tracked.clear(key)

    # -- history of each key ---------------------------------------------------------------

    @property
    def history_retention(self) -> HistoryRetention:
        """How much history of each key this state keeps (``versions`` 0: none)."""
        return self._history.retention

    def history(
        self, key: str, limit: int | None = None, since: int | None = None
    ) -> list[KeyVersion]:
        """``key``'s last versions, oldest first: after revision ``since`` (None: every
        one kept), at most the newest ``limit``. Empty if history is off
        (``history_retention``) or nothing of the key is kept."""
        _check_history_read(key, limit, since)
        with self._lock:
            self._publish_durable()
            found = self._history.read(key, self.wall_clock(), limit, since)
            shown = self._views.revision  # changes not yet durable are not shown yet
        # Copies: history holds the state's own values, which no caller may change.
        return [
            dataclasses.replace(version, value=copy_value(version.value))
            for version in found
            if version.revision <= shown
        ]

    def submit_history(
        self, key: str, limit: int | None = None, since: int | None = None
    ) -> Answer[list[KeyVersion]]:
        """``history`` for event-loop code, for any store: a future, done at once unless
        the store keeps history itself (Redis)."""
        if not self._store.shared_by_servers:
            return settled(lambda: self.history(key, limit, since))
        _check_history_read(key, limit, since)
        if not self._history.enabled:
            return Completed([])
        return ensure_future(self._store.history_async(key, self.wall_clock(), limit, since))

    def _refuse_blocking_lifetimes(self, ttls: Mapping[str, float], bound: set[str]) -> None:
        """A shared store keeps lifetimes itself, and only its event-loop path carries them."""
        keys = ", ".join(map(repr, sorted({*ttls, *bound})))
        kind = "expiring keys" if ttls else "keys bound to a session"
        raise ValueError(
            f"{kind} ({keys}): with {type(self._store).__name__}, write them with "
            "update_state_async (from the server's event loop) or through a server"
        )

    def _track_bindings(
        self, owner: Hashable, updates: dict[str, JsonValue], removals: set[str], bound: set[str]
    ) -> None:
        """After a commit (lock held): keys written as ephemeral are bound to ``owner``;
        any other key written or removed is bound to no one."""
        by_key, by_owner = self._bound_owner, self._bound_keys
        for key in (*updates, *removals):
            holder = by_key.pop(key, _UNBOUND)
            if holder is not _UNBOUND:
                keys = by_owner[holder]
                keys.discard(key)
                if not keys:
                    del by_owner[holder]
        for key in bound:
            by_key[key] = owner
            by_owner.setdefault(owner, set()).add(key)

    def bound_keys(self, access_token: object) -> set[str]:
        """The keys bound to ``access_token`` (written with ``ephemeral``)."""
        with self._lock:
            return set(self._bound_keys.get(check_token(access_token), ()))

    def is_ephemeral(self, key: str) -> bool:
        """True if ``key`` is bound to a session (removed when it ends)."""
        with self._lock:
            return key in self._bound_owner

    def expires_in(self, key: str) -> float | None:
        """Seconds until ``key`` expires (0 when due), or None if it does not expire."""
        with self._lock:
            at = self._deadlines.get(key)
        return None if at is None else max(0.0, at - self.wall_clock())

    def expiring(self, keys: Iterable[str]) -> dict[str, float]:
        """``expires_in`` of those of ``keys`` that expire, read at one instant."""
        now = self.wall_clock()
        with self._lock:
            tracked = self._deadlines
            if not tracked:
                return {}
            found = {key: tracked.get(key) for key in keys}
        return {key: max(0.0, at - now) for key, at in found.items() if at is not None}

    async def expire_due_async(self, limit: int = EXPIRY_BATCH) -> int:
        """``expire_due`` from the event loop, for any store: a shared store (Redis)
        expires keys on its own clock, and any server may do it."""
        if not self._store.shared_by_servers:
            return self.expire_due(limit)
        return await self._store.expire_due_async(limit)

    def submit_expiring(self, keys: Iterable[str]) -> Answer[dict[str, float]]:
        """``expiring`` for event-loop code, for any store: a future, done at once unless
        the store keeps deadlines on its own clock (Redis)."""
        if not self._store.shared_by_servers:
            return Completed(self.expiring(keys))
        return ensure_future(self._store.expiring_async(list(keys)))

    def next_expiry(self) -> float | None:
        """Seconds until the next key expires (0: some are due now), None if none expire."""
        with self._lock:
            at = self._deadlines.next_deadline()
        return None if at is None else max(0.0, at - self.wall_clock())

    def expire_due(self, limit: int = EXPIRY_BATCH) -> int:
        """Remove up to ``limit`` keys whose ttl ran out, in one commit; return how many.

        The removal is a normal change with its own revision (subscribers see it as any
        removal). A lease does not stop it. Call it again while it returns ``limit``: a
        server does so once per turn of its event loop, so a wave of expiring keys never
        holds the lock for long. A frozen state expires nothing.
        """
        with self._lock:
            if self._views.frozen or not self._deadlines:
                return 0
            due = self._deadlines.due(self.wall_clock(), limit)
            if not due:
                return 0
            removals = self._present(set(due))
            for key in due:
                if key not in removals:  # removed meanwhile, outside a tracked write
                    self._deadlines.clear(key)
            if not removals:
                return 0
            now = self.wall_clock()
            revision = self._store.commit(EXPIRY, {}, removals, self.clock(), None, None, now)
            self._track_deadlines({}, removals, {})
            if self._history.enabled:
                self._history_revision = revision
                self._history.record(revision, now, EXPIRY, {}, removals)
            if self._bound_owner:
                self._track_bindings(EXPIRY, {}, removals, set())
        if self.content_updated.has_callbacks:
            self.content_updated.invoke(access_token=EXPIRY, change=DictionaryChange({}, removals))
        return len(removals)

    # -- the store's change feed ---------------------------------------------------------

    @property
    def delivered_revision(self) -> int:
        """The last revision the store delivered (``ChangeFeed``)."""
        return self._delivered

    def committed(self, revision: int, updates: dict[str, JsonValue], removals: set[str]) -> None:
        """Take a committed change (``ChangeFeed``); one that comes early waits its turn."""
        with self._lock:
            if revision <= self._delivered or self._views.frozen:
                return
            if revision != self._delivered + 1:
                self._early[revision] = (updates, removals)
                return
            self._deliver(revision, updates, removals)
            early = self._early
            while early and self._delivered + 1 in early:
                next_updates, next_removals = early.pop(self._delivered + 1)
                self._deliver(self._delivered + 1, next_updates, next_removals)

    def _deliver(self, revision: int, updates: dict[str, JsonValue], removals: set[str]) -> None:
        self._delivered = revision
        if self._deferred and (self._unpublished or not self._store.is_durable(revision)):
            self._hold_until_durable(revision, updates, removals)
        else:
            self._views.apply(updates, removals, revision)

    def history_lost(
        self,
        epoch: str,
        revision: int,
        content: dict[str, JsonValue],
        facts: dict[str, KeyFacts],
    ) -> None:
        """The store lost its history (``ChangeFeed``): start again from ``content``."""
        with self._lock:
            self._early.clear()
            self._unpublished.clear()
            self._latest.clear()
            self._delivered = revision
            self._views.restart(content, revision, facts)
        self.history_reset.invoke()

    def holds_swept(self, locks: Mapping[Hashable, list[tuple[str, bool]]]) -> None:
        """The store's other servers released this server's leases and locks (``ChangeFeed``)."""
        self.holds_lost.invoke(locks=locks)

    async def start(self) -> None:
        """Let the store start feeding changes committed elsewhere (a server starting)."""
        await self._store.start()

    async def stop(self) -> None:
        """Stop the store's feed and release what this server holds in it."""
        await self._store.stop()

    def mod_revision(self, key: str) -> int | None:
        """``key``'s revision of last change after every delivered change, shown or not
        (``ChangeFeed``; None: absent). The caller holds the lock."""
        latest = self._latest.get(key)
        if latest is not None:
            return latest[0] if latest[1] else None
        facts = self._views.key_facts.get(key)
        return None if facts is None else facts[0]

    def _present(self, keys: set[str]) -> set[str]:
        """Those of ``keys`` that hold a value after every committed change; holds lock."""
        latest = self._latest
        if not latest:
            return self._views.present(keys)
        content = self._views.content
        return {key for key in keys if (latest[key][1] if key in latest else key in content)}

    def _hold_until_durable(
        self, revision: int, updates: dict[str, JsonValue], removals: set[str]
    ) -> None:
        self._unpublished.append((revision, updates, removals))
        latest = self._latest
        for key in updates:
            latest[key] = (revision, True)
        for key in removals:
            latest[key] = (revision, False)
        self._publish_durable()

    def _publish_durable(self) -> None:
        """Show readers every held change that is now durable, in order; holds lock."""
        pending, views, latest = self._unpublished, self._views, self._latest
        while pending and not views.frozen and self._store.is_durable(pending[0][0]):
            revision, updates, removals = pending.popleft()
            views.apply(updates, removals, revision)
            for key in (*updates, *removals):
                if latest[key][0] <= revision:
                    del latest[key]

    def _publish_from_store(self) -> bool:
        """The store's durability listener: publish now, or say it could not (lock busy)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._publish_durable()
        finally:
            self._lock.release()
        return True

    def is_durable(self, revision: int) -> bool:
        """True if ``revision`` may be acknowledged now (always, with the memory store).

        A server acknowledges an update at once when this is true, and otherwise after
        ``await wait_durable_async(revision)``.
        """
        return self._store.is_durable(revision)

    def wait_durable(self, revision: int, timeout: float | None = None) -> None:
        """Block until ``revision`` (from ``update_state``) is as durable as the store promises.

        Immediate with the memory store; with a durable store, acknowledge a change only
        after this returns. Raises ``TimeoutError`` after ``timeout`` seconds and
        ``DurabilityError`` if the store could not write it.
        """
        self._store.wait_durable(revision, timeout)
        if self._unpublished:
            with self._lock:
                self._publish_durable()

    async def wait_durable_async(self, revision: int) -> None:
        """``wait_durable`` from asyncio, without holding a thread while waiting."""
        await self._store.wait_durable_async(revision)
        if self._unpublished:
            with self._lock:
                self._publish_durable()

    def update_locks(
        self,
        access_token: object,
        acquire: Mapping[str, float | None] | None = None,
        release: Iterable[str] | None = None,
    ) -> None:
        """Release ``release`` (always carried out), then lease all of ``acquire`` or none.

        ``acquire`` maps keys to seconds (None: no expiry). Re-leasing a key you hold
        resets its deadline. Raises ``ResourceLockedError`` if any key is leased by another
        token, ``ValueError`` for a negative, NaN or non-numeric duration.
        """
        owner, durations, releases = _lease_change(access_token, acquire, release)
        with self._lock:
            self._store.change_leases(owner, durations, releases, self.clock())

    def submit_lease_change(
        self,
        access_token: object,
        acquire: Mapping[str, float | None] | None = None,
        release: Iterable[str] | None = None,
    ) -> Answer[None]:
        """``update_locks`` for event-loop code: a future, done at once if the store keeps
        leases in process (no thread waits on the store)."""
        owner, durations, releases = _lease_change(access_token, acquire, release)
        with self._lock:  # an in-process store changes them now, as threads do
            return self._store.submit_lease_change(owner, durations, releases, self.clock())

    def leases(self) -> list[Lease]:
        """The live leases: key, owner and seconds left (None: no expiry)."""
        with self._lock:
            return self._store.leases(self.clock())

    def submit_leases(self) -> Answer[list[Lease]]:
        """``leases`` for event-loop code (a future, as ``submit_lease_change``)."""
        with self._lock:
            return self._store.submit_leases(self.clock())

    def release_owner(self, access_token: object) -> None:
        """Release every lease of ``access_token`` and remove the keys bound to it (written
        with ``ephemeral``), in one commit: its session ended. A frozen state (a stopping
        server) removes none: a durable store finds them due at its next start."""
        owner = check_token(access_token)
        removed: set[str] = set()
        with self._lock:
            self._store.release_owner(owner)
            keys = self._bound_keys.pop(owner, None)
            if keys:
                for key in keys:
                    self._bound_owner.pop(key, None)
                if not self._views.frozen:
                    removed = self._present(keys)
                    if removed:
                        now = self.wall_clock()
                        revision = self._store.commit(
                            SESSION_END, {}, removed, self.clock(), None, None, now
                        )
                        self._track_deadlines({}, removed, {})
                        if self._history.enabled:
                            self._history_revision = revision
                            self._history.record(revision, now, SESSION_END, {}, removed)
        if removed and self.content_updated.has_callbacks:
            self.content_updated.invoke(
                access_token=SESSION_END, change=DictionaryChange({}, removed)
            )

    def clear_locks(self) -> None:
        """Release every lease on every key."""
        with self._lock:
            self._store.clear_leases()

    def submit_clear_locks(self) -> Answer[None]:
        """``clear_locks`` for event-loop code (a future, as ``submit_lease_change``)."""
        with self._lock:
            return self._store.submit_clear_leases()

    def get(self, key: str, default: Any = None) -> JsonValue:
        """A copy of the value at ``key``, or ``default``."""
        with self._lock:
            self._publish_durable()
            if key in self._views.content:
                return copy_value(self._views.content[key])
        return default  # type: ignore[no-any-return]

    def entry(self, key: str) -> Entry | None:
        """``key``'s value (a copy) and facts (revision of last change, of creation, number
        of changes), or None if it holds nothing."""
        with self._lock:
            self._publish_durable()
            if key in self._views.content:
                value = copy_value(self._views.content[key])
                at = self._deadlines.get(key)
                left = None if at is None else max(0.0, at - self.wall_clock())
                return Entry.of(key, value, self._views.key_facts[key], left)
        return None

    def shared_entries(
        self, keys: Iterable[str] | None = None, prefix: str = ""
    ) -> tuple[int, dict[str, JsonValue], dict[str, KeyFacts]]:
        """``shared_values`` with each key's facts, read at the same instant; ``prefix``
        narrows ``keys`` (None: every key) to those starting with it."""
        with self._lock:
            content, facts = self._views.content, self._views.key_facts
            names = content.keys() if keys is None else keys
            present = [key for key in names if key in content and key.startswith(prefix)]
            return (
                self._views.revision,
                {key: content[key] for key in present},
                {key: facts[key] for key in present},
            )

    def shared_values(self, keys: Iterable[str] | None = None) -> tuple[int, dict[str, JsonValue]]:
        """The revision and the values at ``keys`` (None: every key), read at one instant.

        The values are the state's own, not copies: for readers that only encode them (a
        server's replies). Changes replace values rather than change them in place, so
        they stay as read; never modify them.
        """
        with self._lock:
            content = self._views.content
            if keys is None:
                return self._views.revision, dict(content)
            return self._views.revision, {key: content[key] for key in keys if key in content}

    def keys_a_copy_may_hold(self, was_shown: KeyFilter, since: int) -> set[str]:
        """Keys a subscriber's copy may still hold, if it was shown the keys ``was_shown``
        passes and has every change up to revision ``since``.

        Those are the shown keys in the state now and those removed after ``since``: what
        a fresh copy under other read rights must tell it to drop if it does not have them.
        """
        with self.get_change_buffer(since, "", was_shown) as missed_view:
            try:
                removed = missed_view.flush_changed_blocking(timeout=0, copy=False).removals
            except TimeoutError:
                removed = set()
            _, content = self.shared_values()
        return {key for key in content if was_shown(key)} | removed

    def copy_content(self) -> dict[str, JsonValue]:
        """A copy of the content at this instant (nested values copied too)."""
        with self._lock:
            self._publish_durable()
            return copy_mapping(self._views.content)

    @contextmanager
    def lock_content(self) -> Iterator[dict[str, JsonValue]]:
        """Hold off every change while the block reads the content it is given."""
        with self._lock:
            self._publish_durable()
            yield copy_mapping(self._views.content)

    @contextmanager
    def get_change_buffer(
        self, since: int | None = None, prefix: str = "", key_filter: KeyFilter | None = None
    ) -> Iterator[DictionaryChangeBuffer]:
        """A buffer whose first flush is the whole content, then every change after it.

        ``since``, ``prefix`` and ``key_filter``: see ``DictionaryChangeMultiView.create_view``.
        """
        with self._lock:
            self._publish_durable()
        with self._views.create_view(since, prefix, key_filter) as view:
            yield view

    def freeze(self) -> None:
        """Refuse every further change; subscribers get what is pending, then end."""
        self._views.freeze()


def _check_history_read(key: str, limit: int | None, since: int | None) -> None:
    check_key(key)
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValueError(f"history limit must be an int >= 0, got {limit!r}")
    if since is not None and (type(since) is not int or since < 0):
        raise ValueError(f"history since must be a revision (an int >= 0), got {since!r}")


def _checked_change(
    change: DictionaryChange,
    expect: Mapping[str, int | None] | None,
    value_limits: ValueSizeLimits,
) -> tuple[dict[str, JsonValue], set[str], Expectations]:
    """A change's updates and removals (``validated_change``) and its checked expectations."""
    updates, removals = validated_change(change.updates, change.removals, value_limits)
    if not expect:
        return updates, removals, {}
    return updates, removals, checked_expectations(expect, updates.keys() | removals)
