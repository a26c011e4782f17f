"""Reads: what a caller may see of the state (gets, listings, subscriptions)."""

from __future__ import annotations

from typing import TypeVar

from statehub.auth import PrefixSet, Principal, Right

T = TypeVar("T")


def readable_keys(principal: Principal, op: str) -> PrefixSet:
    """The keys ``principal`` may read, for a subscription; ``PermissionDeniedError``
    naming ``op`` if it may read none (a stream that could carry nothing is refused)."""
    principal.require_some(Right.READ, op)
    return principal.permissions.read


def only_readable(values: dict[str, T], principal: Principal) -> dict[str, T]:
    """The entries of ``values`` (by key) that ``principal`` may read: ``values`` itself,
    not a copy, when it may read every key (a whole state is not copied per read)."""
    readable = principal.permissions.read
    if readable.everything:
        return values
    return {key: value for key, value in values.items() if key in readable}
