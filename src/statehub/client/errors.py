"""Errors only a client raises: the server went away."""

from __future__ import annotations

from statehub.errors import StatehubError


class ConnectionLost(StatehubError, ConnectionError):
    """The client has no live session with the server.

    Raised to calls that were waiting for a reply when the connection dropped, and to new
    calls until the client has reconnected. Leases and read/write locks held through the
    lost session were released by the server; the client reports them through its
    ``leases_lost`` and ``locks_lost`` events.
    """
