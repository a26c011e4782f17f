"""The default store: nothing outlives the process."""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Iterable, Mapping

from statehub.core.values import JsonValue
from statehub.store.base import Store
from statehub.store.leases import Lease, LeaseTable


class MemoryStore(Store):
    """Keeps leases and the revision in memory; the content lives in the state's mirror."""

    def __init__(self) -> None:
        self._revision = 0
        self._leases = LeaseTable()
        self._epoch = uuid.uuid4().hex

    @property
    def epoch(self) -> str:
        return self._epoch

    def load(self) -> tuple[int, dict[str, JsonValue]]:
        return self._revision, {}

    def commit(
        self,
        owner: Hashable,
        updates: Mapping[str, JsonValue],
        removals: Iterable[str],
        now: float,
    ) -> int:
        self._leases.check_writable(owner, [*updates, *removals], now)
        self._revision += 1
        return self._revision

    def change_leases(
        self,
        owner: Hashable,
        acquire: Mapping[str, float | None],
        release: Iterable[str],
        now: float,
    ) -> None:
        self._leases.change(owner, acquire, release, now)

    def leases(self, now: float) -> list[Lease]:
        return self._leases.active(now)

    def release_owner(self, owner: Hashable) -> None:
        self._leases.release_owner(owner)

    def clear_leases(self) -> None:
        self._leases.clear()
