"""Writes: the caller's rights, then a commit that never blocks the event loop.

With an in-process store (memory, SQLite) a write is committed before ``submit_write``
returns and its revision comes back at once; with a store shared by servers (Redis) it is
a round trip, so a future of the revision comes back, settled by the store in the order
writes were submitted. Either way no edge waits on the store while holding the loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from statehub.auth import Principal, Right
from statehub.core.change import DictionaryChange
from statehub.core.values import check_key
from statehub.store.state_dictionary import StateDictionary


def submit_write(
    state: StateDictionary,
    principal: Principal,
    owner: str,
    updates: Mapping[Any, Any],
    removals: Iterable[Any],
    *,
    op: str,
    expect: Mapping[str, int | None] | None = None,
    ttl: Mapping[str, float] | None = None,
    ephemeral: Iterable[str] | None = None,
) -> int | Awaitable[int]:
    """Commit ``updates`` and ``removals`` for ``owner``, all or nothing.

    Needs the write right on every key it touches and, for ``expect`` (compare-and-set),
    the read right on every key it names (a conflict reports the key's revision, as
    etcd's Txn does); ``op`` names the request in the error. The rest (leases, conflicts,
    values over the limits, ttl and ephemeral checks) is the state's: see
    ``StateDictionary.update_state``. Returns the revision, or an awaitable of it.
    """
    removed = [check_key(key) for key in removals]
    principal.require(Right.WRITE, [*map(check_key, updates), *removed], op)
    if expect:
        principal.require(Right.READ, [*map(check_key, expect)], op)
    return state.submit_update(
        owner,
        DictionaryChange(updates, removed),
        expect=expect or None,
        ttl=ttl or None,
        ephemeral=ephemeral,
    )


async def committed(revision: int | Awaitable[int]) -> int:
    """The revision of a submitted write, once committed (for edges that await it)."""
    return revision if isinstance(revision, int) else await revision
