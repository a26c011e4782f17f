"""The history of each key: its last versions (value or removal, revision, time, who).

etcd keeps every revision until compaction and NATS KV keeps ``history=N`` entries per
key; statehub keeps, per key, at most ``versions`` entries no older than ``age`` seconds
(``HistoryRetention``), for at most ``max_keys`` keys (the keys changed longest ago are
forgotten first). So memory is bounded by ``max_keys * versions`` entries whatever the
traffic. A removal is an entry too (``removed``), so a key's history outlives the key.

History is for reading what happened to a key; resuming a stream of changes is what
``subscribe(..., since=REVISION)`` does (a delta from the change log, or a snapshot).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from statehub.core.values import JsonValue

#: Keys whose history is kept at most (the least recently changed are forgotten first).
DEFAULT_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class HistoryRetention:
    """How much history a state keeps: ``versions`` per key (0: none), none older than
    ``age`` seconds (None: any age), for at most ``max_keys`` keys. ``prefixes``: (key
    prefix, versions) pairs; a key under one keeps that many instead (the longest prefix
    that matches wins; 0: none)."""

    versions: int = 0
    age: float | None = None
    max_keys: int = DEFAULT_MAX_KEYS
    prefixes: tuple[tuple[str, int], ...] = ()

    @property
    def enabled(self) -> bool:
        """True if some key keeps history."""
        return self.versions > 0 or any(versions for _, versions in self.prefixes)

    def versions_for(self, key: str) -> int:
        """How many versions ``key`` keeps."""
        for prefix, versions in self.prefixes:
            if key.startswith(prefix):
                return versions
        return self.versions

    def __post_init__(self) -> None:
        if type(self.versions) is not int or self.versions < 0:
            raise ValueError(f"history versions must be an int >= 0, got {self.versions!r}")
        for prefix, versions in self.prefixes:
            if type(prefix) is not str or type(versions) is not int or versions < 0:
                raise ValueError(
                    f"history for prefix {prefix!r}: versions must be an int >= 0, got {versions!r}"
                )
        # Longest first, so the first match is the most specific.
        ordered = tuple(sorted(self.prefixes, key=lambda rule: -len(rule[0])))
        object.__setattr__(self, "prefixes", ordered)
        if self.age is not None and (
            type(self.age) not in (int, float) or not math.isfinite(self.age) or self.age <= 0
        ):
            raise ValueError(f"history age must be a number of seconds > 0, got {self.age!r}")
        if type(self.max_keys) is not int or self.max_keys < 1:
            raise ValueError(f"history max_keys must be an int >= 1, got {self.max_keys!r}")


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One change of a key: its value after it (None and ``removed`` for a removal), the
    revision, the wall-clock time, and who made it (a session's token ``<session
    id>:<identity>``, ``EXPIRY`` for a ttl that ran out, ``SESSION_END`` for a key bound
    to a session that ended; None if unknown)."""

    key: str
    revision: int
    time: float
    value: JsonValue
    removed: bool
    by: str | None

    @property
    def session(self) -> str | None:
        """The id of the session that made the change (None: not a session's change)."""
        session, colon, _ = (self.by or "").partition(":")
        return session if colon else None

    @property
    def identity(self) -> str | None:
        """The identity of the session that made the change (None: not a session's)."""
        _, colon, identity = (self.by or "").partition(":")
        return identity if colon else None


def owner_name(owner: Hashable) -> str | None:
    """How a history entry names the owner of a change."""
    if owner is None:
        return None
    return owner if isinstance(owner, str) else repr(owner)


class KeyHistory:
    """Per key, its last versions (oldest first), within a ``HistoryRetention``."""

    def __init__(self, retention: HistoryRetention) -> None:
        self.retention = retention
        self._versions: OrderedDict[str, deque[KeyVersion]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.retention.enabled

    def load(self, versions: Iterable[KeyVersion]) -> None:
        """Entries read back from a durable store, in revision order."""
        for version in versions:
            self._append(version)

    def record(
        self,
        revision: int,
        now: float,
        owner: Hashable,
        updates: dict[str, JsonValue],
        removals: Iterable[str],
    ) -> None:
        """The change committed at ``revision``. Values are kept as they are: changes
        replace values, never modify them in place."""
        by = owner_name(owner)
        for key, value in updates.items():
            self._append(KeyVersion(key, revision, now, value, False, by))
        for key in removals:
            self._append(KeyVersion(key, revision, now, None, True, by))

    def _append(self, version: KeyVersion) -> None:
        kept = self._versions.get(version.key)
        if kept is None:
            versions = self.retention.versions_for(version.key)
            if not versions:
                return
            kept = self._versions[version.key] = deque(maxlen=versions)
            if len(self._versions) > self.retention.max_keys:
                self._versions.popitem(last=False)
        else:
            self._versions.move_to_end(version.key)
        kept.append(version)

    def read(
        self, key: str, now: float, limit: int | None = None, since: int | None = None
    ) -> list[KeyVersion]:
        """``key``'s kept versions, oldest first: those after revision ``since`` (None:
        all), the newest ``limit`` of them (None: all), none older than the retention's age."""
        kept = self._versions.get(key)
        if not kept:
            return []
        age = self.retention.age
        while age is not None and kept and kept[0].time < now - age:
            kept.popleft()
        found = [v for v in kept if since is None or v.revision > since]
        if limit is not None:
            found = found[len(found) - limit :] if limit else []
        return found
