"""StateDictionary: the shared key/value state with atomic changes under per-key leases."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from statehub.core.buffers import (
    DEFAULT_LOG_LENGTH,
    DictionaryChangeBuffer,
    DictionaryChangeMultiView,
    validated_change,
)
from statehub.core.change import DictionaryChange
from statehub.core.events import Event
from statehub.core.values import JsonValue, check_duration, check_key, copy_mapping, copy_value
from statehub.errors import ObjectFrozenError
from statehub.store.base import Store
from statehub.store.leases import Lease
from statehub.store.memory import MemoryStore

Clock = Callable[[], float]


def check_token(access_token: object) -> Hashable:
    """Access tokens identify owners, so they must be hashable (None is one of its own)."""
    try:
        hash(access_token)
    except TypeError:
        raise TypeError(
            f"access token must be hashable (a str, say), got {type(access_token).__name__}"
        ) from None
    return access_token


class StateDictionary:
    """A key/value store many writers share, with atomic multi-key changes and leases.

    Every committed change gets the next revision number. ``clock`` (monotonic seconds)
    decides lease expiry; tests pass a fake one.
    """

    def __init__(
        self,
        *,
        store: Store | None = None,
        clock: Clock = time.monotonic,
        log_length: int = DEFAULT_LOG_LENGTH,
    ) -> None:
        self._store = store if store is not None else MemoryStore()
        self._views = DictionaryChangeMultiView(log_length=log_length)
        self._lock = self._views.lock
        self._early: dict[int, tuple[dict[str, JsonValue], set[str]]] = {}
        self.clock = clock
        revision, content = self._store.load()
        with self._lock:
            self._views.load(content, revision)
        #: Invoked after each change committed here with ``access_token=`` and ``change=``.
        self.content_updated = Event()
        #: Invoked (no arguments) when the store lost its history and the content was
        #: reloaded: revisions restart, so every subscriber has to start from a snapshot.
        self.history_reset = Event()
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
    def views(self) -> DictionaryChangeMultiView:
        """The change views of this dictionary (for subscribers)."""
        return self._views

    def update_state(self, access_token: object, change: DictionaryChange) -> int:
        """Apply every update and removal in ``change``, or none of them.

        Raises ``ResourceLockedError`` if another token leases any key, ``TypeError`` for a
        value that is not JSON-like, ``ObjectFrozenError`` once frozen. Returns the
        revision of the change (the current one if the change is empty).
        """
        owner = check_token(access_token)
        updates, removals = validated_change(change.updates, change.removals)
        with self._lock:
            if self._views.frozen:
                raise ObjectFrozenError("cannot update a frozen state dictionary")
            if not (updates or removals):
                return self._views.revision
            revision = self._store.commit(owner, updates, removals, self.clock())
        if self.content_updated.has_callbacks:
            self.content_updated.invoke(
                access_token=access_token, change=DictionaryChange(updates, removals)
            )
        return revision

    async def update_state_async(self, access_token: object, change: DictionaryChange) -> int:
        """``update_state`` for event-loop code: no thread waits while the store commits.

        When it returns, the change is in this dictionary's content (read your writes).
        """
        if self._store.commits_in_process:
            return self.update_state(access_token, change)
        owner = check_token(access_token)
        updates, removals = validated_change(change.updates, change.removals)
        with self._lock:
            if self._views.frozen:
                raise ObjectFrozenError("cannot update a frozen state dictionary")
            if not (updates or removals):
                return self._views.revision
        revision = await self._store.commit_async(owner, updates, removals, self.clock())
        if self.content_updated.has_callbacks:
            self.content_updated.invoke(
                access_token=access_token, change=DictionaryChange(updates, removals)
            )
        return revision

    def submit_update(self, access_token: object, change: DictionaryChange) -> int | Awaitable[int]:
        """The revision at once if the store commits in process, else an awaitable of it.

        Event-loop code that wants no task per change on the fast path uses this.
        """
        if self._store.commits_in_process:
            return self.update_state(access_token, change)
        return self.update_state_async(access_token, change)

    # -- the store's change feed ---------------------------------------------------------

    def committed(self, revision: int, updates: dict[str, JsonValue], removals: set[str]) -> None:
        """Apply a committed change (``ChangeFeed``); one that comes early waits its turn."""
        with self._lock:
            views = self._views
            if revision <= views.revision or views.frozen:
                return
            if revision != views.revision + 1:
                self._early[revision] = (updates, removals)
                return
            views.apply(updates, removals, revision)
            early = self._early
            while early and views.revision + 1 in early:
                next_updates, next_removals = early.pop(views.revision + 1)
                views.apply(next_updates, next_removals, views.revision + 1)

    def history_lost(self, epoch: str, revision: int, content: dict[str, JsonValue]) -> None:
        """The store lost its history (``ChangeFeed``): start again from ``content``."""
        with self._lock:
            self._early.clear()
            self._views.restart(content, revision)
        self.history_reset.invoke()

    async def start(self) -> None:
        """Let the store start feeding changes committed elsewhere (a server starting)."""
        await self._store.start()

    async def stop(self) -> None:
        """Stop the store's feed and release what this server holds in it."""
        await self._store.stop()

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

    async def wait_durable_async(self, revision: int) -> None:
        """``wait_durable`` from asyncio, without holding a thread while waiting."""
        await self._store.wait_durable_async(revision)

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
        owner = check_token(access_token)
        durations = {check_key(key): check_duration(key, s) for key, s in (acquire or {}).items()}
        releases = [check_key(key) for key in release or ()]
        with self._lock:
            self._store.change_leases(owner, durations, releases, self.clock())

    def leases(self) -> list[Lease]:
        """The live leases: key, owner and seconds left (None: no expiry)."""
        with self._lock:
            return self._store.leases(self.clock())

    def release_owner(self, access_token: object) -> None:
        """Release every lease of ``access_token`` (its session ended)."""
        owner = check_token(access_token)
        with self._lock:
            self._store.release_owner(owner)

    def clear_locks(self) -> None:
        """Release every lease on every key."""
        with self._lock:
            self._store.clear_leases()

    def get(self, key: str, default: Any = None) -> JsonValue:
        """A copy of the value at ``key``, or ``default``."""
        with self._lock:
            if key in self._views.content:
                return copy_value(self._views.content[key])
        return default  # type: ignore[no-any-return]

    def copy_content(self) -> dict[str, JsonValue]:
        """A copy of the content at this instant (nested values copied too)."""
        with self._lock:
            return copy_mapping(self._views.content)

    @contextmanager
    def lock_content(self) -> Iterator[dict[str, JsonValue]]:
        """Hold off every change while the block reads the content it is given."""
        with self._lock:
            yield copy_mapping(self._views.content)

    @contextmanager
    def get_change_buffer(
        self, since: int | None = None, prefix: str = ""
    ) -> Iterator[DictionaryChangeBuffer]:
        """A buffer whose first flush is the whole content, then every change after it.

        ``since`` and ``prefix``: see ``DictionaryChangeMultiView.create_view``.
        """
        with self._views.create_view(since, prefix) as view:
            yield view

    def freeze(self) -> None:
        """Refuse every further change; subscribers get what is pending, then end."""
        self._views.freeze()
