"""statehub: one key/value state shared by many clients, in sync.

Atomic multi-key changes, leases (per-key write rights that expire), read/write locks,
coalesced subscriptions at each subscriber's own rate, and commands run on the server.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names are imported on first use (PEP 562): `import statehub` stays cheap, so a
# client or a CLI command does not pay for the server, the stores and the endpoints.
_LAZY: dict[str, str] = {
    "AsyncClient": "statehub.client",
    "Client": "statehub.client",
    "CommandFailed": "statehub.errors",
    "CommandRegistration": "statehub.core.commands",
    "CommandRoute": "statehub.core.commands",
    "CommandUnavailableError": "statehub.errors",
    "CommandRegistry": "statehub.core.commands",
    "ConflictError": "statehub.errors",
    "ConnectionLost": "statehub.client",
    "DataFileError": "statehub.store.errors",
    "DictionaryChange": "statehub.core.change",
    "DictionaryChangeBuffer": "statehub.core.buffers",
    "DictionaryChangeMultiView": "statehub.core.buffers",
    "DurabilityError": "statehub.store.errors",
    "EndpointError": "statehub.endpoints.return_codes",
    "Entry": "statehub.core.entries",
    "Event": "statehub.core.events",
    "HistoryRetention": "statehub.core.key_history",
    "JsonValue": "statehub.core.values",
    "KeyVersion": "statehub.core.key_history",
    "Lease": "statehub.store.leases",
    "LocalState": "statehub.core.rwlock",
    "LimitExceeded": "statehub.errors",
    "ValueLimitError": "statehub.errors",
    "LockFailed": "statehub.errors",
    "LockNotOwnedError": "statehub.errors",
    "LockUpgradeError": "statehub.errors",
    "MemoryStore": "statehub.store.memory",
    "ObjectFrozenError": "statehub.errors",
    "RWLockTable": "statehub.core.rwlock",
    "ResourceLockedError": "statehub.errors",
    "SQLiteStore": "statehub.store.sqlite",
    "SessionLimits": "statehub.server.limits",
    "StateABC": "statehub.core.rwlock",
    "StateChange": "statehub.client",
    "StateDictionary": "statehub.core.state_dictionary",
    "StateServer": "statehub.server.state_server",
    "StatehubError": "statehub.errors",
    "TimeoutError": "statehub.errors",
    "Store": "statehub.store.base",
    "define_return_code": "statehub.endpoints.return_codes",
}

if TYPE_CHECKING:
    from statehub.client import AsyncClient, Client, ConnectionLost, StateChange
    from statehub.core.buffers import DictionaryChangeBuffer, DictionaryChangeMultiView
    from statehub.core.change import DictionaryChange
    from statehub.core.commands import CommandRegistration, CommandRegistry, CommandRoute
    from statehub.core.entries import Entry
    from statehub.core.events import Event
    from statehub.core.key_history import HistoryRetention, KeyVersion
    from statehub.core.rwlock import LocalState, RWLockTable, StateABC
    from statehub.core.state_dictionary import StateDictionary
    from statehub.core.values import JsonValue
    from statehub.endpoints.return_codes import EndpointError, define_return_code
    from statehub.errors import (
        CommandFailed,
        CommandUnavailableError,
        ConflictError,
        LimitExceeded,
        LockFailed,
        LockNotOwnedError,
        LockUpgradeError,
        ObjectFrozenError,
        ResourceLockedError,
        StatehubError,
        TimeoutError,
        ValueLimitError,
    )
    from statehub.server.limits import SessionLimits
    from statehub.server.state_server import StateServer
    from statehub.store.base import Store
    from statehub.store.errors import DataFileError, DurabilityError
    from statehub.store.leases import Lease
    from statehub.store.memory import MemoryStore
    from statehub.store.sqlite import SQLiteStore


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'statehub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "AsyncClient",
    "Client",
    "CommandFailed",
    "CommandRegistration",
    "CommandRegistry",
    "CommandRoute",
    "CommandUnavailableError",
    "ConflictError",
    "ConnectionLost",
    "DataFileError",
    "DictionaryChange",
    "DictionaryChangeBuffer",
    "DictionaryChangeMultiView",
    "DurabilityError",
    "EndpointError",
    "Entry",
    "Event",
    "HistoryRetention",
    "JsonValue",
    "KeyVersion",
    "Lease",
    "LimitExceeded",
    "LocalState",
    "LockFailed",
    "LockNotOwnedError",
    "LockUpgradeError",
    "MemoryStore",
    "ObjectFrozenError",
    "RWLockTable",
    "ResourceLockedError",
    "SQLiteStore",
    "SessionLimits",
    "StateABC",
    "StateChange",
    "StateDictionary",
    "StateServer",
    "StatehubError",
    "Store",
    "TimeoutError",
    "ValueLimitError",
    "__version__",
    "define_return_code",
]
