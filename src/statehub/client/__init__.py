"""statehub clients: ``AsyncClient`` (the real one) and ``Client`` (a sync facade over it)."""

from statehub.client.async_client import AsyncClient, ChangeStream
from statehub.client.changes import StateChange
from statehub.client.connection import DEFAULT_PORT
from statehub.client.errors import ConnectionLost, LeaseLost, LockLost
from statehub.client.sync_client import Client
from statehub.client.tls import ClientTls

__all__ = [
    "DEFAULT_PORT",
    "AsyncClient",
    "ChangeStream",
    "Client",
    "ClientTls",
    "ConnectionLost",
    "LeaseLost",
    "LockLost",
    "StateChange",
]
