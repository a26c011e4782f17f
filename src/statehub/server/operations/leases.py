"""Lease changes: the caller's rights and the per-client bound on leases held.

A client that has a connection (a session, a NanoVer WebSocket) keeps the keys it leased
in ``held`` and may hold at most ``SessionLimits.max_leases``; over it the whole change is
refused with ``LimitExceededError`` and nothing is leased. Leases that expired or were released
elsewhere are forgotten (from the store's listing) before the bound is applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from statehub.auth import Principal, Right
from statehub.core.values import check_key
from statehub.errors import LimitExceededError
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
) -> Awaitable[None] | None:
    """Release ``release``, then lease all of ``acquire`` for ``owner`` or none of it.

    Needs the lease right on every key named. ``held`` (the client's leased keys, kept up
    to date here) with ``max_leases`` bounds what one client holds; without ``held`` (a
    NanoVer gRPC call, which has no connection) no per-client bound applies. Returns None
    when done at once, else an awaitable (a store shared by servers).
    """
    released = [check_key(key) for key in release]
    principal.require(Right.LEASE, [*map(check_key, acquire), *released], op)
    if held is not None and len(held) + len(acquire) > max_leases:
        listing = state.submit_leases()
        if not isinstance(listing, list):
            return _change_after_listing(
                state, owner, acquire, released, listing, held, max_leases, op
            )
        _forget_lost(held, owner, listing)
        _check_room(held, acquire, max_leases, op)
    changing = state.submit_lease_change(owner, acquire, released)
    if changing is not None:
        return _note_when_changed(changing, held, acquire, released)
    _note(held, acquire, released)
    return None


async def _change_after_listing(
    state: StateDictionary,
    owner: str,
    acquire: Mapping[Any, float | None],
    release: list[str],
    listing: Awaitable[list[Lease]],
    held: dict[str, None],
    max_leases: int,
    op: str,
) -> None:
    _forget_lost(held, owner, await listing)
    _check_room(held, acquire, max_leases, op)
    changing = state.submit_lease_change(owner, acquire, release)
    if changing is not None:
        await changing
    _note(held, acquire, release)


async def _note_when_changed(
    changing: Awaitable[None],
    held: dict[str, None] | None,
    acquire: Mapping[Any, float | None],
    release: list[str],
) -> None:
    await changing
    _note(held, acquire, release)


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
