"""What the Redis store shares with the lock table and the command peers built on it.

``RedisStore`` creates one ``RedisLockTable`` and one ``RedisCommandPeers`` and starts and
stops them, so it imports their modules; they reach the store only through ``RedisLink``,
which keeps the three free of an import circle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import redis.asyncio

from statehub.store.redis_ordered import OrderedScripts

T = TypeVar("T")


class RedisLink(Protocol):
    """The store as its lock table and command peers see it (``RedisStore`` is one)."""

    #: This server's id in Redis (its liveness key, the leases its sessions took).
    server_id: str
    keys: RedisKeys
    #: The queue that sends this server's scripts in the order they were asked for.
    ordered: OrderedScripts
    #: Seconds after which a server that stopped beating is taken for gone.
    liveness_ttl: float
    #: Seconds between two beats of this server.
    heartbeat: float

    def async_client(self) -> redis.asyncio.Redis: ...

    async def run_async(self, call: Awaitable[T]) -> T: ...

    def run_script(self, source: str, keys: list[str], args: list[Any]) -> Any: ...

    async def run_script_async(self, source: str, keys: list[str], args: list[Any]) -> Any: ...

    def holds_trusted(self) -> bool:
        """True while no other server can have swept this one (a grant read now is held)."""
        ...

    def after_next_beat(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(swept)`` once the next beat has told whether this server was swept."""
        ...


class RedisKeys:
    """The names of the store's keys under one prefix (one hash tag: one cluster slot)."""

    def __init__(self, prefix: str) -> None:
        base = "{" + prefix + "}:"
        self.base = base
        self.epoch = base + "epoch"
        self.revision = base + "revision"
        self.content = base + "content"
        self.history = base + "history"
        self.servers = base + "servers"
        self.lock_prefix = base + "lock"
        self.leases = [base + "leases", base + "lease_deadlines", base + "lease_servers"]
        self.facts = base + "facts"
        self.bound = base + "bound"
        self.deadlines = base + "deadlines"
        self.history_versions = base + "history_versions"
        self.key_history = base + "khist:"
        self.history_prefixes = base + "history_prefixes"
        # The scripts read KEYS by position: the change feed, then (commit only) the
        # leases, then the per-key facts and history, in this order.
        feed = [self.epoch, self.revision, self.content, self.history]
        per_key = [
            self.facts,
            self.bound,
            self.deadlines,
            self.history_versions,
            self.key_history,
            self.history_prefixes,
        ]
        self.commit = [*feed, *self.leases, *per_key]
        self.expire = [*feed, *per_key]
        self.snapshot = [self.epoch, self.revision, self.content, self.facts]

    def alive(self, server: str) -> str:
        return f"{self.base}alive:{server}"

    def release_bound(self, server: str) -> list[str]:
        return [
            self.epoch,
            self.revision,
            self.content,
            self.history,
            self.facts,
            self.bound,
            self.alive(server),
            self.history_versions,
            self.key_history,
            self.history_prefixes,
        ]

    def reap(self, server: str) -> list[str]:
        return [*self.leases, self.servers, self.alive(server), self.base + "lockkeys"]
