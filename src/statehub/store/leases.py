"""Per-key leases: exclusive write rights that expire, held by an access token."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from statehub.errors import ResourceLockedError


@dataclass(frozen=True, slots=True)
class Lease:
    """A key leased by ``owner``; ``seconds_left`` is None for a lease that never expires."""

    key: str
    owner: Hashable
    seconds_left: float | None


class LeaseTable:
    """Leases by key, with deadlines on the caller's clock (``now`` is passed in)."""

    def __init__(self) -> None:
        self._leases: dict[str, tuple[Hashable, float | None]] = {}

    def check_writable(self, owner: Hashable, keys: Iterable[str], now: float) -> None:
        """Raise ``ResourceLockedError`` if another owner holds a live lease on any key."""
        if not self._leases:
            return
        blocked = self._blocked(owner, keys, now)
        if blocked:
            raise ResourceLockedError(
                f"keys leased by another owner: {', '.join(map(repr, sorted(blocked)))}",
                frozenset(blocked),
            )

    def change(
        self,
        owner: Hashable,
        acquire: Mapping[str, float | None],
        release: Iterable[str],
        now: float,
    ) -> None:
        """Release ``release`` (always), then take every lease in ``acquire`` or none."""
        for key in release:
            held = self._leases.get(key)
            if held is not None and held[0] == owner:
                del self._leases[key]
        blocked = self._blocked(owner, acquire, now)
        if blocked:
            raise ResourceLockedError(
                f"cannot lease {', '.join(map(repr, sorted(blocked)))}: leased by another owner",
                frozenset(blocked),
            )
        for key, seconds in acquire.items():
            self._leases[key] = (owner, None if seconds is None else now + seconds)

    def release_owner(self, owner: Hashable) -> None:
        """Release every lease ``owner`` holds."""
        self._leases = {key: held for key, held in self._leases.items() if held[0] != owner}

    def clear(self) -> None:
        self._leases.clear()

    def active(self, now: float) -> list[Lease]:
        """The live leases, sorted by key."""
        self._drop_expired(now)
        return [
            Lease(key, owner, None if deadline is None else deadline - now)
            for key, (owner, deadline) in sorted(self._leases.items())
        ]

    def _blocked(self, owner: Hashable, keys: Iterable[str], now: float) -> list[str]:
        leases = self._leases
        blocked = []
        for key in keys:
            held = leases.get(key)
            if held is None or held[0] == owner:
                continue
            deadline = held[1]
            if deadline is not None and deadline <= now:
                del leases[key]
                continue
            blocked.append(key)
        return blocked

    def _drop_expired(self, now: float) -> None:
        expired = [
            key
            for key, (_, deadline) in self._leases.items()
            if deadline is not None and deadline <= now
        ]
        for key in expired:
            del self._leases[key]


class LeasesInProcess:
    """The lease methods of a store whose leases live in this process's memory.

    Leases are runtime facts of the sessions this server holds, so the memory and SQLite
    stores keep them here; a store shared by several servers keeps them where it commits.
    """

    _leases: LeaseTable

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
