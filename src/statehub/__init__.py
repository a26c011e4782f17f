"""statehub: one key/value state shared by many clients, in sync.

Atomic multi-key changes, leases (per-key write rights that expire), read/write locks,
coalesced subscriptions at each subscriber's own rate, and commands run on the server.
"""

from statehub.client import AsyncClient, Client, ConnectionLost, StateChange
from statehub.core.buffers import DictionaryChangeBuffer, DictionaryChangeMultiView
from statehub.core.change import DictionaryChange
from statehub.core.commands import CommandRegistration, CommandRegistry
from statehub.core.events import Event
from statehub.core.rwlock import LocalState, RWLockTable, StateABC
from statehub.core.state_dictionary import StateDictionary
from statehub.core.values import JsonValue
from statehub.endpoints.return_codes import EndpointError, define_return_code
from statehub.errors import (
    CommandFailed,
    LimitExceeded,
    LockFailed,
    LockNotOwnedError,
    LockUpgradeError,
    ObjectFrozenError,
    ResourceLockedError,
    StatehubError,
)
from statehub.server.limits import SessionLimits
from statehub.server.state_server import StateServer
from statehub.store.base import Store
from statehub.store.errors import DataFileError, DurabilityError
from statehub.store.leases import Lease
from statehub.store.memory import MemoryStore
from statehub.store.sqlite import SQLiteStore

__all__ = [
    "AsyncClient",
    "Client",
    "CommandFailed",
    "CommandRegistration",
    "CommandRegistry",
    "ConnectionLost",
    "DataFileError",
    "DictionaryChange",
    "DictionaryChangeBuffer",
    "DictionaryChangeMultiView",
    "DurabilityError",
    "EndpointError",
    "Event",
    "JsonValue",
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
    "define_return_code",
]
