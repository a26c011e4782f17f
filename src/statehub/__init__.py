"""statehub: one key/value state shared by many clients, in sync.

Atomic multi-key changes, leases (per-key write rights that expire), read/write locks,
coalesced subscriptions at each subscriber's own rate, and commands run on the server.
"""

from statehub.core.buffers import DictionaryChangeBuffer, DictionaryChangeMultiView
from statehub.core.change import DictionaryChange
from statehub.core.commands import CommandRegistration, CommandRegistry
from statehub.core.events import Event
from statehub.core.rwlock import LocalState, RWLockTable, StateABC
from statehub.core.state_dictionary import StateDictionary
from statehub.core.values import JsonValue
from statehub.errors import (
    CommandFailed,
    LockFailed,
    LockNotOwnedError,
    LockUpgradeError,
    ObjectFrozenError,
    ResourceLockedError,
    StatehubError,
)
from statehub.store.base import Store
from statehub.store.leases import Lease
from statehub.store.memory import MemoryStore

__all__ = [
    "CommandFailed",
    "CommandRegistration",
    "CommandRegistry",
    "DictionaryChange",
    "DictionaryChangeBuffer",
    "DictionaryChangeMultiView",
    "Event",
    "JsonValue",
    "Lease",
    "LocalState",
    "LockFailed",
    "LockNotOwnedError",
    "LockUpgradeError",
    "MemoryStore",
    "ObjectFrozenError",
    "RWLockTable",
    "ResourceLockedError",
    "StateABC",
    "StateDictionary",
    "StatehubError",
    "Store",
]
