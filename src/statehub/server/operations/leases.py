"""Lease changes: the caller's rights and the per-client bound on leases held.

A client that has a connection (a session, a NanoVer WebSocket) keeps the keys it leased
in ``held`` and may hold at most ``SessionLimits.max_leases``; over it the whole change is
refused with ``LimitExceededError`` and nothing is leased. Leases that expired or were released
elsewhere are forgotten (from the store's listing) before the bound is applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from statehub.auth import Principal, Right
from statehub.core.values import check_key
from statehub.errors import LimitExceededError
from statehub.store.answers import Answer, chained, mapped
from statehub.store.leases import Lease
from statehub.store.state_dictionary import StateDictionary


def change_leases(
    state: StateDictionary,
    principal: Principal,
    owner: str,
    acquire: Mapping[Any, float | None],
    release: Iterable[Any],
    *,
    op: str,
    held: dict[str, None] | None = None,
    max_leases: int = 0,
) -> Answer[None]:
    """Release ``release``, then lease all of ``acquire`` for ``owner`` or none of it.

    Needs the lease right on every key named. ``held`` (the client's leased keys, kept up
    to date here) with ``max_leases`` bounds what one client holds; without ``held`` (a
    NanoVer gRPC call, which has no connection) no per-client bound applies. The future
    is done at once with an in-process store; a store shared by servers answers later.
    """
    released = [check_key(key) for key in release]
    principal.require(Right.LEASE, [*map(check_key, acquire), *released], op)
    if held is None or len(held) + len(acquire) <= max_leases:
        return _change(state, owner, acquire, released, held)

    def change_if_room(leases: list[Lease]) -> Answer[None]:
        _forget_lost(held, owner, leases)
        _check_room(held, acquire, max_leases, op)
        return _change(state, owner, acquire, released, held)

    # Over the bound as far as this client knows: some may have expired or been cleared.
    return chained(state.submit_leases(), change_if_room)


def _change(
    state: StateDictionary,
    owner: str,
    acquire: Mapping[Any, float | None],
    release: list[str],
    held: dict[str, None] | None,
) -> Answer[None]:
    changing = state.submit_lease_change(owner, acquire, release)
    return mapped(changing, lambda _: _note(held, acquire, release))


def _note(
    held: dict[str, None] | None, acquire: Mapping[Any, float | None], release: list[str]
) -> None:
    if held is None:
        return
    for key in release:
        held.pop(key, None)
    held.update(dict.fromkeys(acquire))


def _forget_lost(held: dict[str, None], owner: str, leases: list[Lease]) -> None:
    """Forget keys whose lease expired or was released elsewhere (an admin's clear)."""
    live = {lease.key for lease in leases if lease.owner == owner}
    for key in [key for key in held if key not in live]:
        del held[key]


def _check_room(
    held: dict[str, None], acquire: Mapping[Any, float | None], max_leases: int, op: str
) -> None:
    wanted = held.keys() | acquire.keys()
    if len(wanted) > max_leases:
        raise LimitExceededError(
            f"{op}: this client would hold {len(wanted)} leases (max_leases={max_leases}); "
            "nothing was leased"
        )
