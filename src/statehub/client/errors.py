"""Errors only a client raises: the server went away."""

from __future__ import annotations

from statehub.errors import LockFailed, StatehubError


class ConnectionLost(StatehubError, ConnectionError):
    """The client has no live session with the server.

    Raised to calls that were waiting for a reply when the connection dropped, and to new
    calls until the client has reconnected. Leases and read/write locks held through the
    lost session were released by the server; the client reports them through its
    ``leases_lost`` and ``locks_lost`` events.
    """


class LeaseLost(StatehubError):
    """The server said a lease this client held is gone while the session lived on: the
    server was cut off from the shared store (Redis) longer than the other servers wait,
    and they released it. Raised by the next ``update`` that touches such a key (take the
    lease again first); the ``leases_lost`` event names the keys as soon as it is known.
    """


class LockLost(LockFailed):
    """A read/write lock this client held was released by the other servers while its
    session lived on (its server was cut off from Redis and swept). Raised when the lock
    block ends (or by ``release_lock``); the ``locks_lost`` event names the keys at once.
    Whatever the lock protected may have been changed by the next holder meanwhile:
    fencing tokens let a resource refuse the older holder.
    """
