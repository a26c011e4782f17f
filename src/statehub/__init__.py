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
    "CommandFailedError": "statehub.errors",
    "CommandRegistration": "statehub.core.commands",
    "CommandRegistry": "statehub.core.commands",
    "CommandRoute": "statehub.core.commands",
    "CommandUnavailableError": "statehub.errors",
    "ConfigError": "statehub.endpoints.config",
    "ConflictError": "statehub.errors",
    "ConnectionLostError": "statehub.errors",
    "HeartbeatTimeoutError": "statehub.errors",
    "LeaseLostError": "statehub.errors",
    "LockLostError": "statehub.errors",
    "DataDirectoryError": "statehub.errors",
    "DataFileError": "statehub.errors",
    "DictionaryChange": "statehub.core.change",
    "DictionaryChangeBuffer": "statehub.core.buffers",
    "DictionaryChangeMultiView": "statehub.core.buffers",
    "DurabilityError": "statehub.errors",
    "EndpointError": "statehub.endpoints.return_codes",
    "Entry": "statehub.core.entries",
    "Event": "statehub.core.events",
    "HistoryRetention": "statehub.core.key_history",
    "IdentitiesFileError": "statehub.auth",
    "JsonValue": "statehub.core.values",
    "KeyVersion": "statehub.core.key_history",
    "Lease": "statehub.store.leases",
    "LimitExceededError": "statehub.errors",
    "LocalState": "statehub.core.rwlock",
    "LockFailedError": "statehub.errors",
    "LockNotOwnedError": "statehub.errors",
    "LockUpgradeError": "statehub.errors",
    "MemoryStore": "statehub.store.memory",
    "MessageTooLargeError": "statehub.errors",
    "ObjectFrozenError": "statehub.errors",
    "PermissionDeniedError": "statehub.errors",
    "ProtocolError": "statehub.errors",
    "RWLockTable": "statehub.core.rwlock",
    "RequestCancelledError": "statehub.errors",
    "ResourceLockedError": "statehub.errors",
    "SQLiteStore": "statehub.store.sqlite",
    "SessionLimits": "statehub.server.limits",
    "StateABC": "statehub.core.rwlock",
    "HoldsLost": "statehub.client",
    "StateChange": "statehub.client",
    "StateDictionary": "statehub.store.state_dictionary",
    "StateServer": "statehub.serving.state_server",
    "StatehubError": "statehub.errors",
    "TimeoutError": "statehub.errors",
    "Store": "statehub.store.base",
    "StoreUnavailableError": "statehub.errors",
    "UnauthenticatedError": "statehub.errors",
    "ValueLimitError": "statehub.errors",
    "define_return_code": "statehub.endpoints.return_codes",
}
#: The names before 0.2 (statehub/errors.py): deprecated, reachable, not in __all__.
_FORMER_NAMES = frozenset(
    {"LockFailed", "CommandFailed", "LimitExceeded", "ConnectionLost", "RequestCancelled"}
)

if TYPE_CHECKING:
    from statehub.auth import IdentitiesFileError
    from statehub.client import AsyncClient, Client, HoldsLost, StateChange
    from statehub.core.buffers import DictionaryChangeBuffer, DictionaryChangeMultiView
    from statehub.core.change import DictionaryChange
    from statehub.core.commands import CommandRegistration, CommandRegistry, CommandRoute
    from statehub.core.entries import Entry
    from statehub.core.events import Event
    from statehub.core.key_history import HistoryRetention, KeyVersion
    from statehub.core.rwlock import LocalState, RWLockTable, StateABC
    from statehub.core.values import JsonValue
    from statehub.endpoints.config import ConfigError
    from statehub.endpoints.return_codes import EndpointError, define_return_code
    from statehub.errors import (
        CommandFailedError,
        CommandUnavailableError,
        ConflictError,
        ConnectionLostError,
        DataDirectoryError,
        DataFileError,
        DurabilityError,
        HeartbeatTimeoutError,
        LeaseLostError,
        LimitExceededError,
        LockFailedError,
        LockLostError,
        LockNotOwnedError,
        LockUpgradeError,
        MessageTooLargeError,
        ObjectFrozenError,
        PermissionDeniedError,
        ProtocolError,
        RequestCancelledError,
        ResourceLockedError,
        StatehubError,
        StoreUnavailableError,
        TimeoutError,
        UnauthenticatedError,
        ValueLimitError,
    )
    from statehub.server.limits import SessionLimits
    from statehub.serving.state_server import StateServer
    from statehub.store.base import Store
    from statehub.store.leases import Lease
    from statehub.store.memory import MemoryStore
    from statehub.store.sqlite import SQLiteStore
    from statehub.store.state_dictionary import StateDictionary


def __getattr__(name: str) -> object:
    if name in _FORMER_NAMES:  # not cached: each use warns
        from statehub.errors import renamed

        return renamed(name, "statehub")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'statehub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])  # the former names left out, as from __all__


__all__ = [
    "AsyncClient",
    "Client",
    "CommandFailedError",
    "CommandRegistration",
    "CommandRegistry",
    "CommandRoute",
    "CommandUnavailableError",
    "ConfigError",
    "ConflictError",
    "ConnectionLostError",
    "DataDirectoryError",
    "DataFileError",
    "DictionaryChange",
    "DictionaryChangeBuffer",
    "DictionaryChangeMultiView",
    "DurabilityError",
    "EndpointError",
    "Entry",
    "Event",
    "HeartbeatTimeoutError",
    "HistoryRetention",
    "HoldsLost",
    "IdentitiesFileError",
    "JsonValue",
    "KeyVersion",
    "Lease",
    "LeaseLostError",
    "LimitExceededError",
    "LocalState",
    "LockFailedError",
    "LockLostError",
    "LockNotOwnedError",
    "LockUpgradeError",
    "MemoryStore",
    "MessageTooLargeError",
    "ObjectFrozenError",
    "PermissionDeniedError",
    "ProtocolError",
    "RWLockTable",
    "RequestCancelledError",
    "ResourceLockedError",
    "SQLiteStore",
    "SessionLimits",
    "StateABC",
    "StateChange",
    "StateDictionary",
    "StateServer",
    "StatehubError",
    "Store",
    "StoreUnavailableError",
    "TimeoutError",
    "UnauthenticatedError",
    "ValueLimitError",
    "__version__",
    "define_return_code",
]
