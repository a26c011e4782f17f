"""Writes: the caller's rights, then a commit that never blocks the event loop.

A write comes back as a future of its revision, whatever the store: with an in-process
store (memory, SQLite) it is committed before ``submit_write`` returns and the future is
done (with the write's error if it was refused); with a store shared by servers (Redis)
it is a round trip, settled by the store in the order writes were submitted. Either way
no edge waits on the store while holding the loop, and none asks which store it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from statehub.auth import Principal, Right
from statehub.core.change import DictionaryChange
from statehub.core.values import check_key
from statehub.store.answers import Answer
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
) -> Answer[int]:
    """Commit ``updates`` and ``removals`` for ``owner``, all or nothing.

    Needs the write right on every key it touches and, for ``expect`` (compare-and-set),
    the read right on every key it names (a conflict reports the key's revision, as
    etcd's Txn does); ``op`` names the request in the error. The rest (leases, conflicts,
    values over the limits, ttl and ephemeral checks) is the state's: see
    ``StateDictionary.update_state``. Returns a future of the revision. Rights and
    malformed keys raise at once; what the state refuses is the future's error.
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
