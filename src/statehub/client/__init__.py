"""statehub clients: ``AsyncClient`` (the real one) and ``Client`` (a sync facade over it).

Names are imported on first use (PEP 562), so ``statehub.client.address`` alone (what
the CLI's option parsing needs) does not load the clients themselves.
"""

import importlib
from typing import TYPE_CHECKING

_LAZY: dict[str, str] = {
    "DEFAULT_PORT": "statehub.client.address",
    "AsyncClient": "statehub.client.async_client",
    "ChangeStream": "statehub.client.async_client",
    "Client": "statehub.client.sync_client",
    "ClientTls": "statehub.client.tls",
    "ConnectionLostError": "statehub.errors",
    "HoldsLost": "statehub.client.changes",
    "StateChange": "statehub.client.changes",
}

if TYPE_CHECKING:
    from statehub.client.address import DEFAULT_PORT
    from statehub.client.async_client import AsyncClient, ChangeStream
    from statehub.client.changes import HoldsLost, StateChange
    from statehub.client.sync_client import Client
    from statehub.client.tls import ClientTls
    from statehub.errors import ConnectionLostError


def __getattr__(name: str) -> object:
    if name == "ConnectionLost":  # the name before 0.2, deprecated
        from statehub.errors import renamed

        return renamed(name, "statehub.client")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'statehub.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


__all__ = [
    "DEFAULT_PORT",
    "AsyncClient",
    "ChangeStream",
    "Client",
    "ClientTls",
    "ConnectionLostError",
    "HoldsLost",
    "StateChange",
]
