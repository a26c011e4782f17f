"""What both clients share around the I/O: requests built from a call's arguments, and
replies turned into what the call returns (as httpx's sync and async clients share all
but their I/O). ``AsyncClient`` awaits the round trip; ``Client`` blocks on it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from statehub.client.changes import HoldsLost
from statehub.core.entries import Entry, checked_expectations
from statehub.core.events import Event
from statehub.core.expiry import checked_ephemeral, checked_ttl
from statehub.core.key_history import KeyVersion
from statehub.core.limits import MAX_VALUE_BYTES
from statehub.core.values import JsonValue, check_key, checked_copy
from statehub.errors import LeaseLostError, LockFailedError, LockLostError

Message = dict[str, Any]

logger = logging.getLogger("statehub.client")

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
    #: The grant's fencing token (``{"fence": n}`` in the lock reply), for a protected
    #: resource to compare with the last one it accepted.
    fence: int | None = None
    #: Why the server took it away while the session lived on (``LockLostError``): an
    #: admin's force release or a sweep of its cut-off server; "" while it was not.
    taken_because: str = ""


def take_holds(
    lost: Message,
    leases: dict[str, Any],
    leases_taken: dict[str, str],
    held_locks: Iterable[HeldLock],
) -> tuple[list[str], list[str]]:
    """Apply the server's ``lost`` message (an admin's force release, a sweep of a cut-off
    server) to a client's books: the leases leave ``leases`` and are remembered in
    ``leases_taken`` with the reason, the named locks are marked lost. Returns the keys of
    the leases and of the locks lost, for the ``leases_lost``/``locks_lost`` events."""
    reason = str(lost.get("reason") or "released by the server")
    lease_keys = sorted(str(key) for key in lost.get("leases") or ())
    for key in lease_keys:
        leases.pop(key, None)
        leases_taken[key] = reason
    named = {
        (str(hold.get("key")), str(hold.get("owner")), bool(hold.get("exclusive")))
        for hold in lost.get("locks") or ()
        if isinstance(hold, dict)
    }
    lock_keys = set()
    for held in held_locks:
        if not held.lost and (held.key, held.owner, held.exclusive) in named:
            held.lost, held.taken_because = True, reason
            lock_keys.add(held.key)
    return lease_keys, sorted(lock_keys)


def refuse_taken_leases(arguments: Message, leases_taken: dict[str, str]) -> None:
    """``LeaseLostError``, with nothing sent, if the ``update`` ``arguments`` touch a key
    whose lease the server took away; the client forgets them (the next write may retry)."""
    taken = sorted(
        key for key in (*arguments["updates"], *arguments["removals"]) if key in leases_taken
    )
    if taken:
        reason = leases_taken[taken[0]]
        for key in taken:
            del leases_taken[key]
        raise LeaseLostError(
            f"the lease on {', '.join(map(repr, taken))} was lost ({reason}): nothing was "
            "applied; take the lease again before writing"
        )


def lock_lost_error(held: HeldLock) -> LockFailedError | None:
    """Why releasing ``held`` cannot work (it was lost), or None: ``LockLostError`` if the
    server took it away while the session lived on, ``LockFailedError`` if the session
    that held it ended."""
    mode = "exclusive" if held.exclusive else "shared"
    if held.taken_because:
        return LockLostError(
            f"the {mode} lock on {held.key!r} was lost while held: {held.taken_because}"
        )
    if held.lost:
        return LockFailedError(
            f"the {mode} lock on {held.key!r} was lost while held: the connection to "
            "the server dropped and the server released it"
        )
    return None


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
    max_message_bytes: int,
) -> Message:
    """The ``update`` request's arguments, each checked (errors name the key).

    The server keeps the value size limits (per key prefix, docs/limits.md): here a value
    is refused only if no frame of ``max_message_bytes`` (the server's) could carry it.
    """
    most = max(max_message_bytes, MAX_VALUE_BYTES)
    checked = {
        check_key(key): checked_copy(value, key, most) for key, value in (updates or {}).items()
    }
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


class _MarksLost(Protocol):
    def mark_lost(self, lost: HoldsLost) -> None: ...


def invoke_event(event: Event, **kwargs: Any) -> None:
    """Fire one of the client's events; a failing callback is logged, never raised into
    the client's own work."""
    try:
        event.invoke(**kwargs)
    except Exception:
        logger.exception("a client event callback failed")


def tell_lost(
    streams: Iterable[_MarksLost],
    leases_lost: Event,
    locks_lost: Event,
    lost: tuple[list[str], list[str], str],
) -> None:
    """The session lost ``lost`` (leases, locks, why): mark every open stream's next
    change and fire ``leases_lost`` / ``locks_lost``."""
    leases, locks, reason = lost
    if not leases and not locks:
        return
    for stream in list(streams):
        stream.mark_lost(HoldsLost(tuple(leases), tuple(locks), reason))
    if leases:
        invoke_event(leases_lost, keys=leases)
    if locks:
        invoke_event(locks_lost, keys=locks)
