"""Force-release: an admin takes a read/write lock or a lease away from whoever holds it.

An operator needs this when a holder hangs without dying (its session stays open, so
nothing releases what it holds). Taking a hold away silently would let the holder carry
on as if it still held it, so the holder's session is told, with the same ``lost`` message
a swept server's sessions get (``Session.tell_lost``), and statehub's clients mark the
hold lost (``locks_lost`` / ``leases_lost``; a lock block then ends with ``LockLostError``).

Only holders that are sessions of this server can be told; the reply says, per holder,
whether it was (over Redis, a holder on another server is released but not told).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from statehub.core.rwlock import LockHolding
from statehub.store.leases import Lease
from statehub.store.locks import LockTable
from statehub.store.state_dictionary import StateDictionary

#: What can be force-released, as the ``kind`` argument names it.
KINDS = ("lock", "lease")


class Holder(Protocol):
    """A session as force-release sees it: who it is, and a way to tell it."""

    id: str
    token: str | None

    def tell_lost(
        self, leases: Iterable[str], locks: Iterable[tuple[str, str, bool]], reason: str
    ) -> None: ...


async def force_release_lock(
    locks: LockTable, sessions: Iterable[Holder], key: str, by: str
) -> list[dict[str, Any]]:
    """Release every hold of the lock on ``key``; tell each holding session.

    Raises ``KeyError`` if no one holds it. Waiters stay queued and get the lock next.
    """
    holding = _holding_of(await locks.holdings(), key)
    by_id = {session.id: session for session in sessions}
    released = []
    for owner in holding.holders:
        # (session id, name): a session's or a Momotor call's owner; over Redis it may be a
        # session of another server, which this one cannot tell.
        session_id, name = owner if isinstance(owner, tuple) and len(owner) == 2 else ("", "")
        await locks.release(key, owner, exclusive=holding.mode == "exclusive")
        holder = by_id.get(session_id)
        if holder is not None:
            holder.tell_lost((), [(key, name, holding.mode == "exclusive")], _taken_by(by))
        released.append({"session": session_id, "owner": name, "told": holder is not None})
    return released


async def force_release_lease(
    state: StateDictionary, sessions: Iterable[Holder], key: str, by: str
) -> list[dict[str, Any]]:
    """Release the lease on ``key``; tell the session holding it, if it is one of ours.

    Raises ``KeyError`` if ``key`` is not leased.
    """
    lease = _lease_of(await state.submit_leases(), key)
    await state.submit_lease_change(lease.owner, {}, [key])
    holder = next((session for session in sessions if session.token == lease.owner), None)
    if holder is not None:
        holder.tell_lost([key], (), _taken_by(by))
    return [{"session": holder.id if holder else "", "owner": "", "told": holder is not None}]


def _holding_of(holdings: list[LockHolding], key: str) -> LockHolding:
    for holding in holdings:
        if holding.key == key and holding.holders:
            return holding
    raise KeyError(f"force_release: no one holds the lock on {key!r}")


def _lease_of(leases: list[Lease], key: str) -> Lease:
    for lease in leases:
        if lease.key == key:
            return lease
    raise KeyError(f"force_release: {key!r} is not leased")


def _taken_by(by: str) -> str:
    return f"force-released by {by}"
