"""Every exception a statehub user can catch, under one base class, ``StatehubError``.

Across the network they keep their type and message (``protocol/errors.py`` registers
each with its gRPC status). Errors of one feature's configuration stay with it
(``endpoints.config.ConfigError``, ``auth.IdentitiesFileError``), as do the endpoint
return codes (``EndpointError``); those subclass ``StatehubError`` too.
"""

from __future__ import annotations

import builtins
import warnings
from collections.abc import Mapping
from typing import Any, Self


class StatehubError(Exception):
    """Base class of statehub's own errors."""


class ObjectFrozenError(StatehubError):
    """An operation cannot be performed because the object has been frozen."""


class ResourceLockedError(StatehubError):
    """Keys are leased by another owner, so the change or lease request was refused.

    ``keys`` names the keys that were in the way.
    """

    def __init__(self, message: str, keys: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.keys = keys


class ConflictError(StatehubError):
    """A compare-and-set update found keys not at the revisions it expected; nothing changed.

    ``current`` maps each key whose expectation failed to its revision of last change now
    (None: the key does not exist). The message names each of them.
    """

    def __init__(self, message: str, current: Mapping[str, int | None] | None = None) -> None:
        super().__init__(message)
        self.current: dict[str, int | None] = dict(current or {})

    @classmethod
    def of(cls, expected: Mapping[str, int | None], current: Mapping[str, int | None]) -> Self:
        """The error for the keys of ``current`` (their revision now) that failed ``expected``."""
        parts = []
        for key in sorted(current):
            now, wanted = current[key], expected.get(key)
            now_text = "absent" if now is None else f"at revision {now}"
            wanted_text = "absent" if wanted is None else f"revision {wanted}"
            parts.append(f"{key!r} is {now_text} (expected {wanted_text})")
        return cls(f"compare-and-set failed, nothing applied: {'; '.join(parts)}", current)

    def wire_details(self) -> dict[str, Any]:
        return {"current": [[key, revision] for key, revision in sorted(self.current.items())]}

    @classmethod
    def from_wire_details(cls, message: str, details: dict[str, Any]) -> Self:
        rows = details.get("current")
        current: dict[str, int | None] = {}
        if isinstance(rows, list):
            for row in rows:
                if (
                    isinstance(row, list)
                    and len(row) == 2
                    and isinstance(row[0], str)
                    and (row[1] is None or type(row[1]) is int)
                ):
                    current[row[0]] = row[1]
        return cls(message, current)


class LockFailedError(StatehubError):
    """A read/write lock could not be acquired (timeout, refusal or lost connection)."""


class LockUpgradeError(StatehubError, RuntimeError):
    """An owner holding a shared lock asked for it exclusively (that would deadlock)."""


class LockNotOwnedError(StatehubError, RuntimeError):
    """A lock was released by an owner that does not hold it in that mode."""


class CommandFailedError(StatehubError):
    """A registered command raised; the message names the command and the original error."""


class CommandUnavailableError(StatehubError):
    """A command offered by another server sharing the state could not be run there: that
    server is gone or did not answer in time. The message names the command and the server."""


class LimitExceededError(StatehubError):
    """A client asked for more than it may hold (subscriptions, leases, waiting requests,
    bytes); the message names the limit. Its other requests go on."""


class UnauthenticatedError(StatehubError):
    """The credential was missing where one is required, unknown, expired or malformed."""


class PermissionDeniedError(StatehubError):
    """The identity is known but lacks the right; the message names the key and the right."""


class ValueLimitError(StatehubError, ValueError):
    """A key or value is over one of the documented limits (nesting depth, int size, key
    or value size): some protocol could not carry it, so it was refused. The message names
    the key, where in the value, and the limit."""


class DataFileError(StatehubError):
    """A data file is unreadable, corrupt, in use, or belongs to something else.

    Raised at start-up; the message names the file, and nothing in it has been changed.
    """


class DataDirectoryError(DataFileError):
    """The data directory cannot be created or written: a read-only mount, no permission,
    or a file where the directory should be. The message names it; nothing was changed."""


class DurabilityError(StatehubError):
    """Committed changes could not be written to disk.

    The store refuses every further change once this happens: the state in memory would
    otherwise drift away from what a restart would bring back. A writer waiting for its
    change to be durable gets this error, and cannot know whether the change survives a
    restart.
    """


class StoreUnavailableError(StatehubError):
    """The shared store (Redis) cannot be reached: changes are refused until it is back.

    Reads are still answered from the server's copy of the state, which stops moving
    while the store is away; nothing of a refused change was applied.
    """


class ProtocolError(StatehubError):
    """A peer sent something the session protocol does not allow (malformed, unknown op)."""


class MessageTooLargeError(StatehubError):
    """A message was over the size limit; the message names the size and the limit."""


class RequestCancelledError(StatehubError):
    """The client cancelled a request that was still waiting (a lock, a command)."""


class ConnectionLostError(StatehubError, ConnectionError):
    """The client has no live session with the server.

    Raised to calls that were waiting for a reply when the connection dropped, and to new
    calls until the client has reconnected. Leases and read/write locks held through the
    lost session were released by the server; the client reports them through its
    ``leases_lost`` and ``locks_lost`` events.
    """


class HeartbeatTimeoutError(ConnectionLostError):
    """The server dropped the session: it pinged an idle connection and got no frame back
    within the keepalive bound (a frozen or vanished client). Everything the session held
    was released; no request sent after the last frame the server heard was carried out,
    so a client may send it again on a new session (the blocking ``Client`` does, once).
    """


class LeaseLostError(StatehubError):
    """The server took a lease of this live session away: an admin force-released it, or
    the server was cut off from the shared store (Redis) longer than the other servers
    wait and they released it. Raised by the next ``update`` that touches such a key, with
    nothing applied (take the lease again first); the ``leases_lost`` event names the keys
    as soon as the client knows.
    """


class LockLostError(LockFailedError):
    """A read/write lock this client held was taken away while its session lived on (an
    admin force-released it, or its server was cut off from Redis and swept). Raised when
    the lock block ends (or by ``release_lock``); the ``locks_lost`` event names the keys
    at once. Whatever the lock protected may have been changed by the next holder
    meanwhile: fencing tokens let a resource refuse the older holder.
    """


# Named as redis-py and nats-py name theirs; it is a builtin TimeoutError too.
class TimeoutError(StatehubError, builtins.TimeoutError):
    """A call got no answer from the server within its timeout (``timeout=``, or the
    client's default). The message names the call and the server. The call left no
    trace on the session: the client forgot the request and asked the server to stop it
    (a lock wait is withdrawn; a lock granted after the timeout is given back). A write
    the server had already received may still be applied."""


#: The names before 0.2 -> their names now. Deprecated (docs/versioning.md): a former
#: name is its new class, so ``except LockFailed`` still catches what is raised, and using
#: one warns. They go in 0.3.
FORMER_NAMES = {
    "LockFailed": "LockFailedError",
    "CommandFailed": "CommandFailedError",
    "LimitExceeded": "LimitExceededError",
    "ConnectionLost": "ConnectionLostError",
    "RequestCancelled": "RequestCancelledError",
}


def renamed(former: str, where: str) -> type[StatehubError]:
    """The class ``former`` names now, with a ``DeprecationWarning`` naming the new name
    (``where``: the module the caller used, for the message)."""
    current = FORMER_NAMES[former]
    warnings.warn(
        f"{where}.{former} is deprecated, use {where}.{current} (the same class)",
        DeprecationWarning,
        stacklevel=3,
    )
    cls: type[StatehubError] = globals()[current]
    return cls


def __getattr__(name: str) -> type[StatehubError]:
    if name not in FORMER_NAMES:
        raise AttributeError(f"module 'statehub.errors' has no attribute {name!r}")
    return renamed(name, "statehub.errors")
