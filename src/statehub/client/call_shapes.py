"""What both clients share around the I/O: requests built from a call's arguments, and
replies turned into what the call returns (as httpx's sync and async clients share all
but their I/O). ``AsyncClient`` awaits the round trip; ``Client`` blocks on it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from statehub.core.entries import Entry, checked_expectations
from statehub.core.expiry import checked_ephemeral, checked_ttl
from statehub.core.key_history import KeyVersion
from statehub.core.values import JsonValue, check_key, checked_copy

Message = dict[str, Any]

#: Reads and compare-and-set removals ``remove(missing_ok=False)`` tries before it gives up
#: on a key that keeps changing.
REMOVE_ATTEMPTS = 10


@dataclass(eq=False, slots=True)
class HeldLock:
    """One hold of a read/write lock, granted under session ``generation``."""

    key: str
    owner: str
    exclusive: bool
    generation: int
    lost: bool = False


def expectation(key: str, if_revision: int | None, if_absent: bool) -> dict[str, int | None]:
    """The ``expect`` of a one-key change: ``{}`` (none), ``{key: N}`` or ``{key: None}``."""
    if if_absent and if_revision is not None:
        raise ValueError(
            f"key {key!r}: if_absent and if_revision exclude each other (a key that does not "
            "exist has no revision)"
        )
    if if_absent:
        return {key: None}
    return {} if if_revision is None else {key: if_revision}


def update_arguments(
    updates: Mapping[str, JsonValue] | None,
    removals: Iterable[str] | None,
    expect: Mapping[str, int | None] | None,
    ttl: Mapping[str, float] | None,
    ephemeral: Iterable[str] | None,
) -> Message:
    """The ``update`` request's arguments, each checked (errors name the key)."""
    checked = {check_key(key): checked_copy(value, key) for key, value in (updates or {}).items()}
    removed = [check_key(key) for key in removals or ()]
    arguments: Message = {"updates": checked, "removals": removed}
    if expect:
        arguments["expect"] = checked_expectations(expect, checked.keys() | set(removed))
    if ttl:
        arguments["ttl"] = checked_ttl(ttl, checked)
    if ephemeral:
        arguments["ephemeral"] = sorted(checked_ephemeral(ephemeral, checked))
    return arguments


def history_arguments(key: str, limit: int | None, since: int | None) -> Message:
    arguments: Message = {"key": check_key(key)}
    if limit is not None:
        arguments["limit"] = limit
    if since is not None:
        arguments["since"] = since
    return arguments


def key_versions(key: str, reply: Message) -> list[KeyVersion]:
    return [
        KeyVersion(
            key,
            entry["revision"],
            entry["time"],
            entry.get("value"),
            bool(entry.get("removed", False)),
            entry.get("by"),
        )
        for entry in reply["versions"]
    ]


def entry_from_wire(key: str, value: JsonValue, facts: list[Any]) -> Entry:
    expires_in = float(facts[3]) if len(facts) > 3 else None
    return Entry(key, value, facts[0], facts[1], facts[2], expires_in)


def checked_lock_wait(timeout: object) -> float | None:
    """A lock's wait ``timeout`` (seconds >= 0, or None); ``ValueError`` otherwise."""
    if timeout is not None and (type(timeout) not in (int, float) or not timeout >= 0):  # type: ignore[operator]
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return timeout  # type: ignore[return-value]


def lock_deadline(wait: float | None, call_timeout: float | None) -> float | None:
    """How long a lock request may go unanswered: the server answers a bounded wait by
    itself; the client's timeout on top covers a server that does not answer at all. An
    unbounded wait is what was asked for."""
    return None if wait is None or call_timeout is None else wait + call_timeout


def apply_batch(mirror: dict[str, JsonValue], message: Message) -> None:
    """Apply one change batch of a subscription to a local copy of the state."""
    updates: dict[str, JsonValue] = message.get("updates") or {}
    if message.get("snapshot"):
        mirror.clear()
    else:
        for key in message.get("removals") or ():
            mirror.pop(key, None)
    mirror.update(updates)
