"""Deadlines of expiring keys (``ttl=``), keys bound to a session (``ephemeral=``), and
the checks of a write's ttl and ephemeral keys.

A key written with ``ttl=seconds`` gets an absolute deadline on the server's wall clock
(``time.time``: a durable store keeps the deadline, so it has to mean the same after a
restart). Any later write of the key without a ttl, or its removal, clears the deadline.
When the deadline passes, the state removes the key in a normal commit with a revision
of its own, so every subscriber sees the removal like any other (``StateDictionary
.expire_due``). Expiry works in bounded batches: a wave of expiring keys is spread over
many short commits, and a server keeps serving between them.

The deadlines live in a dict (the truth) and a heap of ``(deadline, key)`` (the order);
a heap entry whose deadline no longer matches the dict is stale and skipped, so a rewrite
costs O(log n) and no search.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Mapping

from statehub.core.values import check_key

#: Keys removed per expiry commit: bounded, so that other writers wait little.
EXPIRY_BATCH = 250


class LifetimeOwner:
    """The owner of the removals the state makes itself, when a key's ttl runs out or the
    session it is bound to ends: not a session, and leases do not stop them (the key's
    writer asked for them)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Passed to ``Store.commit`` as the owner of the removals expiry makes.
EXPIRY = LifetimeOwner("EXPIRY")
#: The owner of the removal of keys bound to a session that ended.
SESSION_END = LifetimeOwner("SESSION_END")


def checked_ephemeral(ephemeral: Iterable[str] | None, updated: Collection[str]) -> set[str]:
    """``ephemeral`` checked: keys the update sets (``ValueError`` naming one it does not;
    ``TypeError`` for a bare str, which would name its characters)."""
    if isinstance(ephemeral, str):
        raise TypeError(
            f"ephemeral must be a collection of keys, got the str {ephemeral!r} "
            "(write [key] for one key)"
        )
    checked: set[str] = set()
    for key in ephemeral or ():
        check_key(key)
        if key not in updated:
            raise ValueError(
                f"ephemeral key {key!r}, which the update does not set: a binding comes "
                "with a value"
            )
        checked.add(key)
    return checked


def checked_ttl(ttl: Mapping[str, object] | None, updated: Collection[str]) -> dict[str, float]:
    """``ttl`` checked: each key set by the update, each ttl a finite number of seconds > 0.

    Raises ``ValueError`` naming the key for a ttl <= 0, NaN or infinite, or on a key the
    update does not set (a ttl is given with a value: removing a key needs none);
    ``TypeError`` for a ttl that is not a number.
    """
    checked: dict[str, float] = {}
    for key, seconds in (ttl or {}).items():
        check_key(key)
        if type(seconds) not in (int, float):
            raise TypeError(
                f"ttl of key {key!r} must be a number of seconds, got {type(seconds).__name__}"
            )
        value = float(seconds)  # type: ignore[arg-type]
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"ttl of key {key!r} must be a finite number of seconds > 0, got {seconds!r} "
                "(omit the ttl for a key that does not expire)"
            )
        if key not in updated:
            raise ValueError(
                f"a ttl on key {key!r}, which the update does not set: a ttl comes with a value"
            )
        checked[key] = value
    return checked


class Deadlines:
    """Each expiring key's deadline, and which are due first."""

    def __init__(self, deadlines: Mapping[str, float] | None = None) -> None:
        self._deadline: dict[str, float] = dict(deadlines or {})
        self._heap = [(deadline, key) for key, deadline in self._deadline.items()]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._deadline)

    @property
    def live(self) -> dict[str, float]:
        """Key -> deadline (read only: change it through ``set`` and ``clear``)."""
        return self._deadline

    def __contains__(self, key: object) -> bool:
        return key in self._deadline

    def get(self, key: str) -> float | None:
        return self._deadline.get(key)

    def items(self) -> list[tuple[str, float]]:
        return list(self._deadline.items())

    def set(self, key: str, deadline: float) -> None:
        self._deadline[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 2 * len(self._deadline) + 64:  # mostly stale entries: rebuild
            self._heap = [(d, k) for k, d in self._deadline.items()]
            heapq.heapify(self._heap)

    def clear(self, key: str) -> None:
        self._deadline.pop(key, None)

    def next_deadline(self) -> float | None:
        """The earliest live deadline (None: no key expires)."""
        heap, live = self._heap, self._deadline
        while heap and live.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` keys whose deadline is at or before ``now``, earliest first
        (they stay here until the removal is committed: ``clear``)."""
        heap, live = self._heap, self._deadline
        found: list[str] = []
        seen: set[str] = set()
        popped: list[tuple[float, str]] = []
        while heap and len(found) < limit and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            if live.get(key) == deadline and key not in seen:
                seen.add(key)
                found.append(key)
                popped.append((deadline, key))
        for entry in popped:  # put back: cleared when committed, kept if the commit fails
            heapq.heappush(heap, entry)
        return found
