"""Read/write locks: the lock right on the key, checked here for every edge.

The session protocol (``lock``, ``unlock``, ``test_lock``, ``list_locks``) and Momotor's
``sharedLock`` both take locks through these calls, so a worker's lock and a statehub
client's lock are refused by the same rule and wait in the same queue of the store's
``LockTable``. What may wait on a shared store comes back as a future (done at once for
an in-process store); ``acquire`` returns the ``Acquisition`` that holds the request's
place from this call on.
"""

from __future__ import annotations

from collections.abc import Hashable

from statehub.auth import Principal, Right
from statehub.core.acquisition import Acquisition
from statehub.core.rwlock import LockHolding
from statehub.store.answers import Answer, mapped
from statehub.store.locks import LockTable


def may_lock(principal: Principal, key: str, op: str) -> None:
    """``PermissionDeniedError`` naming ``op`` unless ``principal`` may lock ``key``."""
    principal.require(Right.LOCK, [key], op)


def acquire_lock(
    locks: LockTable,
    principal: Principal,
    key: str,
    owner: Hashable,
    *,
    exclusive: bool,
    timeout: float | None = None,
    op: str = "lock",
) -> Acquisition[int]:
    """Queue ``owner``'s request for ``key`` now; await the result for the grant's fence."""
    may_lock(principal, key, op)
    return locks.acquire(key, owner, exclusive=exclusive, timeout=timeout)


def release_lock(
    locks: LockTable,
    principal: Principal,
    key: str,
    owner: Hashable,
    *,
    exclusive: bool,
    op: str = "unlock",
) -> Answer[None]:
    """Give back one of ``owner``'s holds of ``key`` (``LockNotOwnedError`` if none)."""
    may_lock(principal, key, op)
    return locks.release(key, owner, exclusive=exclusive)


def lock_is_free(
    locks: LockTable, principal: Principal, key: str, *, exclusive: bool, op: str = "test_lock"
) -> Answer[bool]:
    """True if a new owner could take ``key`` in that mode right now."""
    may_lock(principal, key, op)
    return locks.can_acquire(key, exclusive=exclusive)


def lock_is_held(
    locks: LockTable, principal: Principal, key: str, *, exclusive: bool, op: str = "test_lock"
) -> Answer[bool]:
    """True if some owner holds ``key`` in that mode right now (Momotor's test)."""
    may_lock(principal, key, op)
    return locks.held(key, exclusive=exclusive)


def list_locks(locks: LockTable, principal: Principal) -> Answer[list[LockHolding]]:
    """The locks held now on the keys ``principal`` may lock, sorted by key."""
    lockable = principal.permissions.lock
    holdings = locks.holdings()
    if lockable.everything:
        return holdings
    return mapped(holdings, lambda found: [held for held in found if held.key in lockable])
