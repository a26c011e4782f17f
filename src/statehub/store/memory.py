"""The default store: nothing outlives the process."""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Mapping

from statehub.core.entries import Expectations, KeyFacts, check_expectations
from statehub.core.expiry import LifetimeOwner
from statehub.core.values import JsonValue
from statehub.store.base import Store
from statehub.store.leases import LeasesInProcess, LeaseTable


class MemoryStore(LeasesInProcess, Store):
    """Keeps leases and the revision in memory; the content (and each key's facts, which
    compare-and-set checks) lives in the state's mirror, and so do deadlines of keys
    that expire."""

    def __init__(self) -> None:
        self._revision = 0
        self._leases = LeaseTable()
        self._epoch = uuid.uuid4().hex

    @property
    def epoch(self) -> str:
        return self._epoch

    def load(self) -> tuple[int, dict[str, JsonValue], dict[str, KeyFacts]]:
        return self._revision, {}, {}

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
        if owner.__class__ is not LifetimeOwner:
            self._leases.check_writable(owner, [*updates, *removals], now)
        if expect:
            check_expectations(expect, self._feed.mod_revision)
            if not (updates or removals):
                return self._revision
        self._revision += 1
        self._feed.committed(self._revision, updates, removals)
        return self._revision
