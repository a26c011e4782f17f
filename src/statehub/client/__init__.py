"""statehub clients: ``AsyncClient`` (the real one) and ``Client`` (a sync facade over it)."""

from statehub.client.async_client import AsyncClient, ChangeStream
from statehub.client.changes import StateChange
from statehub.client.connection import DEFAULT_PORT
from statehub.client.sync_client import Client
from statehub.client.tls import ClientTls
from statehub.errors import ConnectionLostError, StatehubError, renamed

__all__ = [
    "DEFAULT_PORT",
    "AsyncClient",
    "ChangeStream",
    "Client",
    "ClientTls",
    "ConnectionLostError",
    "StateChange",
]


def __getattr__(name: str) -> type[StatehubError]:
    if name != "ConnectionLost":  # the name before 0.2, deprecated
        raise AttributeError(f"module 'statehub.client' has no attribute {name!r}")
    return renamed(name, "statehub.client")
