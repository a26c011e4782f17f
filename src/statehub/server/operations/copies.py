"""A client's copy of the state when its read rights change (reloaded identities).

The client is sent a fresh copy of what it may read now, with a removal for every key its
copy may still hold that the new rights hide: the keys any earlier rights showed that are
in the state now, and those removed since the last change it was sent.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from statehub.auth import PrefixSet
from statehub.store.state_dictionary import StateDictionary


def keys_to_drop(
    state: StateDictionary,
    shown: Iterable[PrefixSet],
    delivered: int,
    kept: Collection[str],
) -> set[str]:
    """Keys a copy holding every change up to ``delivered``, read under any of the rights
    ``shown``, may hold that a fresh copy holding ``kept`` does not."""
    rights = list(shown)
    if not rights:
        return set()

    def was_shown(key: str) -> bool:
        return any(key in readable for readable in rights)

    return state.keys_a_copy_may_hold(was_shown, delivered).difference(kept)
