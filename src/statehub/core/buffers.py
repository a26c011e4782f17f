"""Change buffers and multi-views: coalesced, paced streams of changes to a dictionary.

A ``DictionaryChangeMultiView`` owns the shared content and a log of which keys each
revision touched. Its views (``DictionaryChangeBuffer``) are cursors into that log: a
write appends one log entry whatever the number of views, and each view coalesces what
it missed when it flushes. NanoVer copied every change into every view under its mutex,
so writes slowed down linearly with subscribers.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from statehub.core.change import DictionaryChange
from statehub.core.entries import KeyFacts
from statehub.core.limits import ValueSizeLimits
from statehub.core.notifier import Notifier
from statehub.core.pacing import Pacer
from statehub.core.values import JsonValue, check_key, checked_copy, copy_mapping
from statehub.errors import ObjectFrozenError

#: Commits kept in the log; a view further behind is brought up to date from per-key
#: revisions and tombstones instead (slower, but never a gap). It is also the history
#: bound: a reader resuming from a revision at most this many commits old gets a delta.
DEFAULT_LOG_LENGTH = 100_000

#: Every key may hold a value up to ``MAX_VALUE_BYTES``.
DEFAULT_VALUE_LIMITS = ValueSizeLimits()

#: Which keys a view shows, beyond its prefix (True: shown).
KeyFilter = Callable[[str], bool]


def validated_change(
    updates: Mapping[str, Any] | None,
    removals: Iterable[str] | None,
    value_limits: ValueSizeLimits = DEFAULT_VALUE_LIMITS,
) -> tuple[dict[str, JsonValue], set[str]]:
    """Check keys and values (each against its key's size limit) and take private copies;
    nothing is kept if anything is wrong."""
    limit = value_limits.for_key
    checked_updates = {
        check_key(key): checked_copy(value, key, limit(key))
        for key, value in (updates or {}).items()
    }
    checked_removals = {check_key(key) for key in removals or ()}
    for key in checked_removals:
        checked_updates.pop(key, None)  # a key both updated and removed ends up removed
    return checked_updates, checked_removals


class DictionaryChangeBuffer:
    """Tracks the latest values of keys that have changed between flushes.

    Standalone, it holds what ``update`` gave it. Made by a ``DictionaryChangeMultiView``,
    it also sees every change to the shared dictionary since it was created (to keys
    under its ``prefix``, if it has one).
    """

    def __init__(
        self,
        *,
        _source: DictionaryChangeMultiView | None = None,
        _prefix: str = "",
        _key_filter: KeyFilter | None = None,
    ) -> None:
        self._source = _source
        self._prefix = _prefix
        self._key_filter = _key_filter
        self._notifier = _source.notifier if _source is not None else Notifier(threading.RLock())
        self._lock = self._notifier.lock
        self._pending_updates: dict[str, JsonValue] = {}
        self._pending_removals: set[str] = set()
        self._snapshot_due = False
        self._frozen = False
        self.cursor = _source.revision if _source is not None else 0
        #: True when the first flush is the whole content (not a delta since a revision).
        self.starts_with_snapshot = True

    @property
    def frozen(self) -> bool:
        return self._frozen or (self._source is not None and self._source.frozen)

    def update(
        self,
        updates: Mapping[str, Any] | None = None,
        removals: Iterable[str] | None = None,
    ) -> None:
        """Record changed keys and their new values, and removed keys."""
        checked_updates, checked_removals = validated_change(updates, removals)
        with self._lock:
            if self.frozen:
                raise ObjectFrozenError("cannot update a frozen change buffer")
            self._catch_up()
            self._record(checked_updates, checked_removals)
            self._notifier.notify()

    def freeze(self) -> None:
        """Refuse further updates and stop following the source; flush what is left once."""
        with self._lock:
            self._catch_up()
            if self._snapshot_due:
                self._take_snapshot()
            self._frozen = True
            self._notifier.notify()

    def flush_changed_blocking(
        self, timeout: float | None = None, *, copy: bool = True
    ) -> DictionaryChange:
        """Wait until there are changes, then return them all and clear them.

        Raises ``ObjectFrozenError`` once the buffer is frozen and has nothing left, and
        ``TimeoutError`` if ``timeout`` seconds pass with nothing to flush. With
        ``copy=False`` the values are the shared state's own (never changed in place, as
        changes replace values): for a reader that only encodes them, such as a server.
        """
        with self._lock:
            if not self._notifier.wait_blocking(self._flushable, timeout):
                raise TimeoutError(f"no change within {timeout} s")
            return self._take(copy)

    async def flush_changed_async(self, *, copy: bool = True) -> DictionaryChange:
        """Like ``flush_changed_blocking``, awaiting in the running event loop."""
        await self._notifier.wait(self._flushable)
        with self._lock:
            return self._take(copy)

    def subscribe_changes(self, interval: float = 0) -> Iterator[DictionaryChange]:
        """Yield changes, at most one flush every ``interval`` seconds; ends when frozen."""
        pacer = Pacer(interval)
        while True:
            time.sleep(pacer.delay())
            try:
                change = self.flush_changed_blocking()
            except ObjectFrozenError:
                return
            pacer.flushed()
            yield change

    async def subscribe_changes_async(self, interval: float = 0) -> AsyncIterator[DictionaryChange]:
        """``async for`` version of ``subscribe_changes``; no thread per subscriber."""
        pacer = Pacer(interval)
        while True:
            await asyncio.sleep(pacer.delay())
            try:
                change = await self.flush_changed_async()
            except ObjectFrozenError:
                return
            pacer.flushed()
            yield change

    def caught_up(self) -> bool:
        """True if this view has nothing to flush up to its source's latest revision.

        A server uses it to tell that two views have shown the same changes: both caught
        up at the same moment, they stand at the same revision with nothing pending.
        """
        with self._lock:
            return not self._has_pending() and not self.frozen

    def _flushable(self) -> bool:
        return self._has_pending() or self.frozen

    def _has_pending(self) -> bool:
        # Catching up first: changes outside the prefix leave nothing pending.
        self._catch_up()
        if self._snapshot_due:
            self._take_snapshot()
        return bool(self._pending_updates or self._pending_removals)

    def _take(self, copy: bool = True) -> DictionaryChange:
        self._catch_up()
        if self._snapshot_due:
            self._take_snapshot()
        if not (self._pending_updates or self._pending_removals):
            raise ObjectFrozenError("the change buffer is frozen and has nothing left to flush")
        change = DictionaryChange()
        change.updates = copy_mapping(self._pending_updates) if copy else self._pending_updates
        change.removals = self._pending_removals
        self._pending_updates = {}
        self._pending_removals = set()
        return change

    def _take_snapshot(self) -> None:
        """The whole content under the prefix, read now rather than when the view began:
        views waiting for their first flush hold no copy of the state meanwhile."""
        assert self._source is not None
        prefix, key_filter = self._prefix, self._key_filter
        content = self._source.content
        if key_filter is not None:
            self._pending_updates = {
                key: value
                for key, value in content.items()
                if key.startswith(prefix) and key_filter(key)
            }
        elif prefix:
            self._pending_updates = {
                key: value for key, value in content.items() if key.startswith(prefix)
            }
        else:
            self._pending_updates = dict(content)
        self._pending_removals = set()
        self._snapshot_due = False

    def _catch_up(self) -> None:
        source = self._source
        if source is None or self._frozen or self.cursor >= source.revision:
            return
        if self._snapshot_due:  # the snapshot, when taken, will hold these changes
            self.cursor = source.revision
            return
        updated, removed = self._visible(*source.changed_since(self.cursor))
        content = source.content
        for key in updated:
            self._pending_updates[key] = content[key]
        self._pending_removals -= updated
        for key in removed:
            self._pending_updates.pop(key, None)
        self._pending_removals |= removed
        self.cursor = source.revision

    def _record(self, updates: dict[str, JsonValue], removals: set[str]) -> None:
        for key in removals:
            self._pending_updates.pop(key, None)
        self._pending_removals |= removals
        self._pending_updates.update(updates)
        self._pending_removals.difference_update(updates)

    def _preload(self, source: DictionaryChangeMultiView, since: int | None) -> None:
        if since is not None and since <= source.revision:
            try:
                updated, removed = self._visible(*source.changed_since(since))
            except LookupError:
                pass
            else:
                self._pending_updates = {key: source.content[key] for key in updated}
                self._pending_removals = removed
                self.starts_with_snapshot = False
                return
        self._snapshot_due = True

    def _visible(self, updated: set[str], removed: set[str]) -> tuple[set[str], set[str]]:
        """The keys of a change this view shows: under its prefix and passing its filter."""
        prefix, key_filter = self._prefix, self._key_filter
        if prefix:
            updated = {key for key in updated if key.startswith(prefix)}
            removed = {key for key in removed if key.startswith(prefix)}
        if key_filter is not None:
            updated = {key for key in updated if key_filter(key)}
            removed = {key for key in removed if key_filter(key)}
        return updated, removed


class DictionaryChangeMultiView:
    """A shared dictionary with any number of independent change buffers tracking it."""

    def __init__(
        self,
        *,
        lock: threading.RLock | None = None,
        log_length: int = DEFAULT_LOG_LENGTH,
    ) -> None:
        self.notifier = Notifier(lock if lock is not None else threading.RLock())
        self.lock = self.notifier.lock
        self.content: dict[str, JsonValue] = {}
        self.revision = 0
        self.frozen = False
        self._log_length = log_length
        self._log: deque[tuple[int, tuple[str, ...]]] = deque(maxlen=log_length)
        #: Per present key: (mod_revision, create_revision, version); see core/entries.py.
        self.key_facts: dict[str, KeyFacts] = {}
        self._tombstones: dict[str, int] = {}
        self._tombstone_floor = 0
        self._prune_at = 1024
        self._views: weakref.WeakSet[DictionaryChangeBuffer] = weakref.WeakSet()

    @contextmanager
    def create_view(
        self, since: int | None = None, prefix: str = "", key_filter: KeyFilter | None = None
    ) -> Iterator[DictionaryChangeBuffer]:
        """A new buffer whose first flush is the whole current content, then changes.

        With ``since`` (a revision a client already saw), the first flush is only what
        changed after it, if that is still known; otherwise the whole content, and the
        view's ``starts_with_snapshot`` says which. With ``prefix``, the view sees only
        keys that start with it, and changes to other keys never wake it. ``key_filter``
        narrows that further (to the keys a subscriber may read, say), with the same effect.
        """
        view = self.open_view(since, prefix, key_filter)
        try:
            yield view
        finally:
            self.remove_view(view)

    def open_view(
        self, since: int | None = None, prefix: str = "", key_filter: KeyFilter | None = None
    ) -> DictionaryChangeBuffer:
        """``create_view`` for a view that outlives a block; ``remove_view`` ends it."""
        with self.lock:
            view = DictionaryChangeBuffer(_source=self, _prefix=prefix, _key_filter=key_filter)
            view._preload(self, since)
            self._views.add(view)
        return view

    def remove_view(self, view: DictionaryChangeBuffer) -> None:
        """Freeze ``view`` and stop providing updates to it."""
        with self.lock:
            self._views.discard(view)
            view.freeze()

    def subscribe_changes(self, interval: float = 0) -> Iterator[DictionaryChange]:
        """Yield the current content, then changes, at most one flush per ``interval``."""
        with self.create_view() as view:
            yield from view.subscribe_changes(interval)

    async def subscribe_changes_async(self, interval: float = 0) -> AsyncIterator[DictionaryChange]:
        """``async for`` version of ``subscribe_changes``."""
        with self.create_view() as view:
            async for change in view.subscribe_changes_async(interval):
                yield change

    def update(
        self,
        updates: Mapping[str, Any] | None = None,
        removals: Iterable[str] | None = None,
    ) -> None:
        """Set keys to values and remove keys; every view will see the change."""
        checked_updates, checked_removals = validated_change(updates, removals)
        with self.lock:
            present = self.present(checked_removals)
            self.apply(checked_updates, present, self.revision + 1)

    def copy_content(self) -> dict[str, JsonValue]:
        """A copy of the dictionary at this instant."""
        with self.lock:
            return copy_mapping(self.content)

    def freeze(self) -> None:
        """Refuse further updates; views flush what they hold once more, then end."""
        with self.lock:
            self.frozen = True
            self.notifier.notify()

    def load(
        self,
        content: dict[str, JsonValue],
        revision: int,
        facts: Mapping[str, KeyFacts] | None = None,
    ) -> None:
        """Start from ``content`` at ``revision`` (read from a store) with each key's
        ``facts``; a key without them counts as created at ``revision``. Holds ``lock``."""
        self.content = content
        self.revision = revision
        facts = facts or {}
        fallback = (revision, revision, 1)
        self.key_facts = {key: facts.get(key, fallback) for key in content}
        self._tombstone_floor = revision

    def restart(
        self,
        content: dict[str, JsonValue],
        revision: int,
        facts: Mapping[str, KeyFacts] | None = None,
    ) -> None:
        """Start again from ``content`` at ``revision``, history forgotten; caller holds ``lock``.

        Views made before end (they flush what they hold, then stop): their cursors name
        revisions of a history that is gone.
        """
        for view in list(self._views):
            view.freeze()
        self._views = weakref.WeakSet()
        self._log.clear()
        self._tombstones = {}
        self.load(content, revision, facts)
        self.notifier.notify()

    def present(self, keys: set[str]) -> set[str]:
        """Those of ``keys`` that hold a value; caller holds ``lock``.

        Removing a key that holds nothing changes nothing: callers drop such removals
        before a change is numbered, so they cost no revision, log entry or tombstone.
        """
        content = self.content
        if all(key in content for key in keys):
            return keys
        return {key for key in keys if key in content}

    def apply(self, updates: dict[str, JsonValue], removals: set[str], revision: int) -> None:
        """Apply a change from ``validated_change`` as ``revision``; the caller holds ``lock``."""
        if self.frozen:
            raise ObjectFrozenError("cannot update a frozen dictionary")
        if not (updates or removals):
            return
        content, key_facts, tombstones = self.content, self.key_facts, self._tombstones
        for key, value in updates.items():
            content[key] = value
            facts = key_facts.get(key)  # inlined next_facts: this is the hot path
            key_facts[key] = (
                (revision, revision, 1) if facts is None else (revision, facts[1], facts[2] + 1)
            )
        if tombstones:
            for key in updates:
                tombstones.pop(key, None)
        for key in removals:
            content.pop(key, None)
            key_facts.pop(key, None)
            tombstones[key] = revision
        self._log.append((revision, (*updates, *removals)))
        self.revision = revision
        if len(tombstones) >= self._prune_at:
            self._prune_tombstones()
        self.notifier.notify()

    def changed_since(self, cursor: int) -> tuple[set[str], set[str]]:
        """Keys updated (present now) and removed since revision ``cursor``; caller holds lock."""
        if cursor >= self.revision:
            return set(), set()
        touched: set[str] = set()
        log = self._log
        if log and log[0][0] <= cursor + 1:
            for revision, keys in reversed(log):
                if revision <= cursor:
                    break
                touched.update(keys)
            present = touched & self.content.keys()
            return present, touched - present
        if cursor < self._tombstone_floor:
            raise LookupError(f"changes since revision {cursor} are no longer kept")
        updated = {key for key, facts in self.key_facts.items() if facts[0] > cursor}
        removed = {key for key, rev in self._tombstones.items() if rev > cursor}
        return updated, removed

    def _prune_tombstones(self) -> None:
        oldest_view = min((view.cursor for view in self._views), default=self.revision)
        oldest_needed = max(0, min(oldest_view, self.revision - self._log_length))
        self._tombstones = {
            key: rev for key, rev in self._tombstones.items() if rev > oldest_needed
        }
        self._tombstone_floor = max(self._tombstone_floor, oldest_needed)
        self._prune_at = max(1024, 2 * len(self._tombstones))
