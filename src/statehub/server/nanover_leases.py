"""Leases NanoVer's gRPC clients took through this server, and those a sweep took away.

A NanoVer gRPC client has no connection the server could tell anything: its calls are
independent unary requests, its lease owner is its ``access_token``, and NanoVer's
protocol has no message for "your lease is gone". When this server was cut off from the
shared store (Redis) longer than the other servers wait, they release every lease it
took (``StateDictionary.holds_lost``). Its NanoVer owners still believe they hold theirs,
and with nobody else holding the key their next ``UpdateState`` would go through as if
the lease protected it. So this book remembers which keys each owner leased here (until
released or expired); a sweep marks those lost and logs it, and a write by that owner to
a lost key is refused the way NanoVer refuses a write (``success=False``, nothing
applied) until the owner leases the key again or releases it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: The book drops expired leases once it holds this many owners (then twice as many as
#: it kept): owners that never call again cost nothing for long.
_PRUNE_AT = 1024


class NanoverLeaseBook:
    """For each owner (``nanover_token_owner``), its leases here and those it lost."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: owner -> key -> when its lease expires (``clock`` time; inf: never).
        self._held: dict[str, dict[str, float]] = {}
        #: owner -> keys whose lease a sweep took away and it has not leased again.
        self._lost: dict[str, set[str]] = {}
        self._prune_at = _PRUNE_AT

    def changed(self, owner: str, acquired: Mapping[str, float], released: Iterable[str]) -> None:
        """``owner`` leased ``acquired`` (key -> seconds) and released ``released`` here."""
        now = self._clock()
        held = self._held.setdefault(owner, {})
        lost = self._lost.get(owner, set())
        for key in released:
            held.pop(key, None)
            lost.discard(key)
        for key, seconds in acquired.items():
            held[key] = now + seconds if math.isfinite(seconds) else math.inf
            lost.discard(key)
        if not held:
            del self._held[owner]
        if not lost:
            self._lost.pop(owner, None)
        if len(self._held) >= self._prune_at:
            self._drop_expired(now)
            self._prune_at = max(_PRUNE_AT, 2 * len(self._held))

    def swept(self, **_: Any) -> None:
        """The other servers released this server's holds: every lease here is lost.

        Called by ``StateDictionary.holds_lost`` (whose ``locks`` concern sessions)."""
        now = self._clock()
        self._drop_expired(now)
        for owner, held in self._held.items():
            self._lost.setdefault(owner, set()).update(held)
            logger.warning(
                "NanoVer lease owner %s lost its leases on %s: this server was cut off from "
                "the shared store and they were released; its writes to them are refused "
                "until it leases them again",
                owner,
                ", ".join(sorted(held)),
            )
        self._held.clear()

    def lost_keys(self, owner: str, keys: Iterable[str]) -> list[str]:
        """Which of ``keys`` ``owner`` lost in a sweep (and has not leased again), sorted."""
        lost = self._lost.get(owner)
        return sorted(key for key in keys if key in lost) if lost else []

    def _drop_expired(self, now: float) -> None:
        for owner in list(self._held):
            held = self._held[owner]
            for key in [key for key, expires in held.items() if expires <= now]:
                del held[key]
            if not held:
                del self._held[owner]
