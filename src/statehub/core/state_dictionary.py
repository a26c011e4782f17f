"""StateDictionary: the shared key/value state with atomic changes under per-key leases."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from statehub.core.buffers import (
    DEFAULT_LOG_LENGTH,
    DictionaryChangeBuffer,
    DictionaryChangeMultiView,
    KeyFilter,
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
        self.clock = clock
        revision, content = self._store.load()
        with self._lock:
            self._views.load(content, revision)
        #: Invoked after each committed change with ``access_token=`` and ``change=``.
        self.content_updated = Event()

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
            self._views.apply(updates, removals, revision)
        if self.content_updated.has_callbacks:
            self.content_updated.invoke(
                access_token=access_token, change=DictionaryChange(updates, removals)
            )
        return revision

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
        self, since: int | None = None, prefix: str = "", key_filter: KeyFilter | None = None
    ) -> Iterator[DictionaryChangeBuffer]:
        """A buffer whose first flush is the whole content, then every change after it.

        ``since``, ``prefix`` and ``key_filter``: see ``DictionaryChangeMultiView.create_view``.
        """
        with self._views.create_view(since, prefix, key_filter) as view:
            yield view

    def freeze(self) -> None:
        """Refuse every further change; subscribers get what is pending, then end."""
        self._views.freeze()
