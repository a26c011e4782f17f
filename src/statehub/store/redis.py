"""RedisStore: several statehub servers sharing one state through Redis.

The atomic step (check leases on Redis's clock, apply, assign the next revision, append
to the history stream) is one Lua script (``redis_scripts.COMMIT``), so no two servers
can hand out one revision and no server can see a revision without its change. Each
server keeps a copy of the content (the state dictionary's mirror) and follows the
history stream with ``XREAD BLOCK``, delivering every change to its mirror in revision
order; its subscribers are fed from that mirror exactly as with the memory store.

A commit made here is delivered at once, and the caller's reply waits until the mirror
has every revision up to it (read your writes). Every stream entry names its epoch: a
Redis that lost its data gets a new epoch, and the mirror restarts from a snapshot (the
server then ends its sessions; clients reconnect and subscribe again from a snapshot).

Leases live in Redis (deadlines on Redis's clock) and record the server whose session
took them. Each server refreshes a liveness key (TTL ``liveness_ttl``) every
``heartbeat`` seconds and sweeps the servers whose key expired: their leases and
read/write locks are released within ``liveness_ttl + heartbeat`` of their last beat.

Durability ``"redis"`` acknowledges once Redis has the change (with ``appendfsync
always`` that is on Redis's disk); ``replicas=N`` also waits (``WAIT``) until N replicas
have it, so that a Sentinel failover cannot lose an acknowledged change.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgpack
import redis
import redis.asyncio

from statehub.core.entries import Expectations, KeyFacts
from statehub.core.key_history import HistoryRetention, KeyVersion, owner_name
from statehub.core.values import JsonValue
from statehub.errors import (
    ConflictError,
    DurabilityError,
    ResourceLockedError,
    StoreUnavailableError,
)
from statehub.protocol.codec import decode_value, encode_value
from statehub.store import redis_scripts
from statehub.store.answers import Answer, mapped
from statehub.store.base import Store
from statehub.store.leases import Lease
from statehub.store.redis_commands import RedisCommandPeers
from statehub.store.redis_connection import RedisTarget
from statehub.store.redis_link import RedisKeys
from statehub.store.redis_locks import RedisLockTable
from statehub.store.redis_ordered import OrderedScripts, log_failure

logger = logging.getLogger(__name__)

#: Changes kept in the history stream (``XADD MAXLEN``): a server (or a client through
#: one) that fell further behind than this starts again from a snapshot.
DEFAULT_HISTORY_LENGTH = 100_000
#: Seconds a server's liveness key lives without a refresh; refreshed every HEARTBEAT.
DEFAULT_LIVENESS_TTL = 5.0
DEFAULT_HEARTBEAT = 1.0
#: Waits between two attempts to reach a Redis that went away: doubling up to the most.
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
#: Entries read from the stream per ``XREAD``.
READ_BATCH = 1000

T = TypeVar("T")
#: Stream entries as redis-py returns them: (id, {field: value}).
_Entries = list[tuple[bytes, dict[bytes, bytes]]]


@dataclass(slots=True)
class _QueuedCommit:
    """A commit waiting to be sent: (owner, change) as sent, the change, its expectations,
    its future."""

    pair: tuple[bytes, bytes]
    updates: dict[str, JsonValue]
    removals: set[str]
    expect: Expectations | None
    committed: asyncio.Future[int]


class RedisStore(Store):
    """The state in Redis at ``url``, shared with every server using the same prefix."""

    shared_by_servers = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "statehub",
        history_length: int = DEFAULT_HISTORY_LENGTH,
        replicas: int = 0,
        replica_timeout: float = 1.0,
        liveness_ttl: float = DEFAULT_LIVENESS_TTL,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        if type(history_length) is not int or history_length < 1:
            raise ValueError(f"history_length must be an int >= 1, got {history_length!r}")
        if type(replicas) is not int or replicas < 0:
            raise ValueError(f"replicas must be an int >= 0, got {replicas!r}")
        if not 0 < heartbeat < liveness_ttl:
            raise ValueError(
                f"heartbeat ({heartbeat!r} s) must be > 0 and shorter than liveness_ttl "
                f"({liveness_ttl!r} s)"
            )
        self.target = RedisTarget.parse(url)
        self.prefix = prefix
        self.history_length = history_length
        self.replicas = replicas
        self.replica_timeout = replica_timeout
        self.liveness_ttl = liveness_ttl
        self.heartbeat = heartbeat
        #: This server's id in Redis (its liveness key, the leases its sessions took).
        self.server_id = uuid.uuid4().hex
        self.keys = RedisKeys(prefix)
        self.sync_client = self.target.sync_client()
        self._async: redis.asyncio.Redis | None = None
        self._sync_scripts: dict[str, Any] = {}
        self._async_scripts: dict[int, dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._lock_table: RedisLockTable | None = None
        self._command_peers: RedisCommandPeers | None = None
        self._stopping = False
        self._history_retention: HistoryRetention | None = None
        self._backoff = FIRST_BACKOFF
        self._queued: list[_QueuedCommit] = []
        self._committer: asyncio.Task[None] | None = None
        self._applied_waiters: list[tuple[int, asyncio.Future[int], Exception | None]] = []
        self._catch_up_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._catcher: asyncio.Task[None] | None = None
        #: Lease and lock scripts, run in Redis in the order the requests came.
        self.ordered = OrderedScripts(self.async_client, self._unavailable)
        self.available = True
        #: The epoch this server follows and the highest revision it saw in it: what
        #: every script checks Redis against (``_epoch_claim``).
        self._epoch = "-"
        self._seen_revision = 0
        #: Until when (loop time) this server's liveness key surely lives, from the send
        #: time of its last beat that Redis took: until then no other server can sweep it.
        self._alive_until = 0.0
        self._beaten = False
        #: Called with ``swept=`` after the next beat that reaches Redis.
        self._after_beat: list[Callable[[bool], None]] = []
        try:
            self._epoch, revision, content, facts = self._snapshot_sync()
            self._seen_revision = revision
        except redis.RedisError as error:
            self.sync_client.close()
            raise StoreUnavailableError(
                f"cannot reach Redis at {self.target.describe()}: {error}"
            ) from None
        self._loaded: tuple[int, dict[str, JsonValue], dict[str, KeyFacts]] | None = (
            revision,
            content,
            facts,
        )

    # -- Store ----------------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        return self._epoch

    def load(self) -> tuple[int, dict[str, JsonValue], dict[str, KeyFacts]]:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            _, revision, content, facts = self._snapshot_sync()
            return revision, content, facts
        return loaded

    def commit(
        self,
        owner: Hashable,
        updates: dict[str, JsonValue],
        removals: set[str],
        now: float,
        expect: Expectations | None = None,
        deadlines: Mapping[str, float] | None = None,
        at: float | None = None,
    ) -> int:
        pair = self._commit_pair(owner, updates, removals, expect)
        reply = self.run_script(redis_scripts.COMMIT, self.keys.commit, self._commit_args([pair]))
        epoch = reply[0].decode()
        if epoch != self._epoch:
            self._restart_from(epoch, *self._snapshot_sync()[1:])
        revision = self._deliver_commit(reply[1][0], updates, removals, expect)
        self.run_sync(lambda: self._catch_up_sync(revision))
        return revision

    def submit_commit(
        self,
        owner: Hashable,
        updates: dict[str, JsonValue],
        removals: set[str],
        now: float,
        expect: Expectations | None = None,
        bound: Collection[str] | None = None,
        ttl: Mapping[str, float] | None = None,
    ) -> asyncio.Future[int]:
        # No task per commit: the batch sender settles each commit's future itself.
        committed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        pair = self._commit_pair(owner, updates, removals, expect, bound, ttl)
        self._queued.append(_QueuedCommit(pair, updates, removals, expect, committed))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._send_queued())
        return committed

    def change_leases(
        self,
        owner: Hashable,
        acquire: Mapping[str, float | None],
        release: Iterable[str],
        now: float,
    ) -> None:
        """The blocking path, for callers off the event loop (``submit_lease_change`` on it)."""
        args = _lease_change_args(owner, self.server_id, acquire, release)
        _check_leased(self.run_script(redis_scripts.CHANGE_LEASES, self.keys.leases, args))

    def submit_lease_change(
        self,
        owner: Hashable,
        acquire: Mapping[str, float | None],
        release: Iterable[str],
        now: float,
    ) -> Answer[None]:
        args = _lease_change_args(owner, self.server_id, acquire, release)
        return mapped(
            self.ordered.submit(redis_scripts.CHANGE_LEASES, self.keys.leases, args),
            _check_leased,
        )

    def leases(self, now: float) -> list[Lease]:
        """The blocking path, for callers off the event loop (``submit_leases`` on it)."""
        return _leases_from(self.run_script(redis_scripts.LIST_LEASES, self.keys.leases[:2], []))

    def submit_leases(self, now: float) -> Answer[list[Lease]]:
        return mapped(
            self.ordered.submit(redis_scripts.LIST_LEASES, self.keys.leases[:2], []),
            _leases_from,
        )

    def release_owner(self, owner: Hashable) -> None:
        """Queued when called from the server's event loop (a session ending cannot wait:
        a failure is logged, and the sweep releases them if this server is gone); blocking
        from anywhere else."""
        args = [_owner_bytes(owner), self.server_id]
        bound_keys = self.keys.release_bound(self.server_id)
        bound_args = self._release_bound_args(self._binding(owner), prefix=False)
        if self._async is not None and _running_loop() is self._loop:
            released = self.ordered.submit(redis_scripts.RELEASE_OWNER, self.keys.leases, args)
            released.add_done_callback(log_failure(f"releasing the leases of {owner!r}"))
            removed = self.ordered.submit(redis_scripts.RELEASE_BOUND, bound_keys, bound_args)
            removed.add_done_callback(log_failure(f"removing the keys bound to {owner!r}"))
        else:
            self.run_script(redis_scripts.RELEASE_OWNER, self.keys.leases, args)
            self.run_script(redis_scripts.RELEASE_BOUND, bound_keys, bound_args)

    async def expire_due_async(self, limit: int) -> int:
        """Remove up to ``limit`` keys whose deadline passed on Redis's clock, in one
        commit (delivered by the feed); any server may do it. Returns how many were due
        (``limit`` when more are due)."""
        client = self.async_client()
        reply = await self.run_async(
            self._script_async(client, redis_scripts.EXPIRE)(
                self.keys.expire,
                [self._epoch_claim(), str(self.history_length), str(limit), encode_value("EXPIRY")],
            )
        )
        return limit if int(reply[3]) else len(reply[2])

    async def expiring_async(self, keys: Collection[str]) -> dict[str, float]:
        """Seconds left of those of ``keys`` that expire, on Redis's clock."""
        if not keys:
            return {}
        flat = await self.run_script_async(
            redis_scripts.TIME_LEFT, [self.keys.deadlines], [_key_bytes(key) for key in keys]
        )
        return {_key_str(flat[i]): float(flat[i + 1]) / 1000 for i in range(0, len(flat), 2)}

    def _binding(self, owner: Hashable) -> bytes:
        """How ``P:bound`` names a session's binding: ``<server id>|<owner>``."""
        return self.server_id.encode() + b"|" + _owner_bytes(owner)

    def _release_bound_args(self, binding: bytes, *, prefix: bool) -> list[bytes | str]:
        return [
            self._epoch_claim(),
            str(self.history_length),
            binding,
            "1" if prefix else "0",
            encode_value("SESSION_END"),
        ]

    def keep_history(self, retention: HistoryRetention) -> None:
        """Keep each key's last ``retention.versions`` versions in Redis, for every server
        over it (the setting is shared: the last server started with one sets it)."""
        self._history_retention = retention

        def store() -> None:
            with self.sync_client.pipeline(transaction=True) as pipe:
                pipe.set(self.keys.history_versions, retention.versions)
                pipe.delete(self.keys.history_prefixes)
                for prefix, versions in retention.prefixes:
                    pipe.hset(self.keys.history_prefixes, _key_bytes(prefix), versions)
                pipe.execute()

        self.run_sync(store)

    async def history_async(
        self, key: str, now: float, limit: int | None, since: int | None
    ) -> list[KeyVersion]:
        """``key``'s kept versions, oldest first (see ``StateDictionary.history``)."""
        entries = await self.run_async(
            self.async_client().lrange(self.keys.key_history + key, 0, -1)
        )
        age = self._history_retention.age if self._history_retention else None
        versions = []
        for packed in entries:
            revision, at_ms, value, owner = msgpack.unpackb(packed, raw=True)
            at = float(at_ms) / 1000
            if (since is not None and revision <= since) or (age is not None and at < now - age):
                continue
            removed = value is False
            by = owner_name(decode_value(owner))
            shown = None if removed else decode_value(value)
            versions.append(KeyVersion(key, int(revision), at, shown, removed, by))
        if limit is not None:
            versions = versions[len(versions) - limit :] if limit else []
        return versions

    async def _release_bound_of_dead(self, client: redis.asyncio.Redis, server: str) -> int:
        """Remove the keys bound to sessions of ``server`` if it is dead (no liveness key)."""
        reply = await self._script_async(client, redis_scripts.RELEASE_BOUND)(
            self.keys.release_bound(server),
            self._release_bound_args(server.encode() + b"|", prefix=True),
        )
        return len(reply[2])

    def clear_leases(self) -> None:
        self.run_sync(lambda: self.sync_client.delete(*self.keys.leases))

    def submit_clear_leases(self) -> Answer[None]:
        return mapped(
            self.ordered.submit(redis_scripts.CLEAR_LEASES, self.keys.leases, []),
            lambda _: None,
        )

    def lock_table(self) -> RedisLockTable:
        """The read/write locks every server over this Redis shares (one per store)."""
        if self._lock_table is None:
            self._lock_table = RedisLockTable(self)
        return self._lock_table

    def command_peers(self) -> RedisCommandPeers:
        """The command directory and calls between the servers over this Redis (one per store)."""
        if self._command_peers is None:
            self._command_peers = RedisCommandPeers(self)
        return self._command_peers

    async def start(self) -> None:
        """Register this server and follow the history (in the server's event loop)."""
        self._async = self.target.async_client()
        self._loop = asyncio.get_running_loop()
        await self.run_async(self._beat(self._async))
        self._tasks = [
            asyncio.create_task(self._follow(), name="statehub-redis-follow"),
            asyncio.create_task(self._keep_alive(), name="statehub-redis-alive"),
        ]
        if self._command_peers is not None:
            await self._command_peers.start()

    async def stop(self) -> None:
        """Stop following, release every lease and lock of this server's sessions."""
        if self._command_peers is not None and self._async is not None:
            await self._command_peers.stop()
        # redis-py may turn a cancelled read into a connection error, which the loops
        # would retry: they also check this flag.
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._catch_up_timer is not None:
            self._catch_up_timer.cancel()
        if self._lock_table is not None:
            await self._lock_table.close()
        await self.ordered.drain()  # releases queued by sessions that just ended
        client, self._async = self._async, None
        if client is None:
            return
        self._async_scripts.pop(id(client), None)
        try:
            await client.delete(self.keys.alive(self.server_id))
            await self._release_bound_of_dead(client, self.server_id)
            await self._script_async(client, redis_scripts.REAP_SERVER)(
                self.keys.reap(self.server_id),
                [self.server_id, self.keys.lock_prefix, self.keys.base],
            )
        except redis.RedisError as error:
            logger.warning("could not release this server's leases in Redis: %s", error)
        finally:
            await client.aclose()

    def close(self) -> None:
        self.sync_client.close()

    # -- committing ----------------------------------------------------------------------

    def _commit_pair(
        self,
        owner: Hashable,
        updates: dict[str, JsonValue],
        removals: set[str],
        expect: Expectations | None = None,
        bound: Collection[str] | None = None,
        ttl: Mapping[str, float] | None = None,
    ) -> tuple[bytes, bytes]:
        """The (owner, change) arguments of one commit in the COMMIT script."""
        if not self.available:
            raise self._unavailable("Redis is away")
        change: list[Any] = [
            [_key_bytes(key) for key in updates],
            [encode_value(value) for value in updates.values()],
            [_key_bytes(key) for key in removals],
        ]
        if expect or bound or ttl:
            change.append([_key_bytes(key) for key in expect or ()])
            change.append([revision or 0 for revision in (expect or {}).values()])
        if bound or ttl:
            change.append([_key_bytes(key) for key in bound or ()])
            change.append(self._binding(owner))
        if ttl:
            change.append([_key_bytes(key) for key in ttl])
            change.append([round(seconds * 1000.0, 3) for seconds in ttl.values()])
        # Old-spec raw strings: Redis's Lua cmsgpack reads those, not the bin types.
        return _owner_bytes(owner), msgpack.packb(change, use_bin_type=False)

    def _commit_args(self, pairs: list[tuple[bytes, bytes]]) -> list[bytes | str]:
        args: list[bytes | str] = [self._epoch_claim(), str(self.history_length)]
        for owner, change in pairs:
            args += [owner, change]
        return args

    def _deliver_commit(
        self,
        result: list[Any],
        updates: dict[str, JsonValue],
        removals: set[str],
        expect: Expectations | None,
    ) -> int:
        """The commit's revision; a change that was made goes to the feed at once."""
        if result[0] == b"locked":
            names = sorted(_key_str(key) for key in result[1])
            raise ResourceLockedError(
                f"keys leased by another owner: {', '.join(map(repr, names))}",
                frozenset(names),
            )
        if result[0] == b"conflict":
            flat = result[1]
            current = {_key_str(flat[i]): int(flat[i + 1]) or None for i in range(0, len(flat), 2)}
            raise ConflictError.of(expect or {}, current)
        revision = int(result[1])
        self._seen_revision = max(self._seen_revision, revision)
        if result[0] == b"ok":
            if len(result) > 2:  # removals of keys that held nothing were dropped
                removals = {_key_str(key) for key in result[2]}
            self._feed.committed(revision, updates, removals)
        return revision

    async def _send_queued(self) -> None:
        """Send the commits queued meanwhile in one script call, until none are left.

        Each commit is still checked and applied on its own; batching only saves round
        trips and Redis-side work, so that many concurrent writers share one connection.
        With ``replicas``, a ``WAIT`` on the same connection covers the whole batch. A
        commit whose caller gave up is delivered to the feed all the same.
        """
        client = self.async_client()
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                epoch, results, reached = await self._send_batch(client, [q.pair for q in batch])
                if epoch != self._epoch:
                    self._restart_from(epoch, *(await self._snapshot_async(client))[1:])
            except (redis.RedisError, OSError) as error:
                failure = (
                    self._unavailable(str(error))
                    if isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError)
                    else error
                )
                for queued in batch:
                    _settle(queued.committed, 0, failure)
                continue
            short = self.replicas and reached < self.replicas
            why = await self._replicas_connected(client) if short else ""
            for queued, result in zip(batch, results, strict=True):
                try:
                    revision = self._deliver_commit(
                        result, queued.updates, queued.removals, queued.expect
                    )
                except (ResourceLockedError, ConflictError) as refused:
                    _settle(queued.committed, 0, refused)
                    continue
                short_of: DurabilityError | None = None
                if short:
                    short_of = DurabilityError(
                        f"revision {revision} is committed on the Redis primary but reached "
                        f"{reached} of {self.replicas} replicas within {self.replica_timeout} "
                        f"s: a failover now could lose it{why}"
                    )
                self._when_applied(revision, queued.committed, short_of)

    async def _replicas_connected(self, client: redis.asyncio.Redis) -> str:
        """Why ``WAIT`` fell short, if it is that the primary has too few replicas: after
        a failover the new primary has one replica fewer, and acknowledgements stop until
        enough (re)connect; run at least ``replicas + 1`` replicas (docs/redis.md)."""
        try:
            connected = int((await client.info("replication")).get("connected_slaves", 0))
        except (redis.RedisError, OSError):
            return ""
        if connected >= self.replicas:
            return ""
        return (
            f" (the primary has {connected} replicas connected: acknowledgements resume once "
            f"{self.replicas} are; run at least {self.replicas + 1} so that a failover "
            "leaves enough)"
        )

    async def _send_batch(
        self, client: redis.asyncio.Redis, pairs: list[tuple[bytes, bytes]]
    ) -> tuple[str, list[Any], int]:
        args = self._commit_args(pairs)
        script = self._script_async(client, redis_scripts.COMMIT)
        if not self.replicas:
            reply = await script(self.keys.commit, args)
            return reply[0].decode(), reply[1], 0
        for _ in range(2):
            async with client.pipeline(transaction=False) as pipe:
                pipe.execute_command(
                    "EVALSHA", script.sha, len(self.keys.commit), *self.keys.commit, *args
                )
                pipe.execute_command("WAIT", self.replicas, int(self.replica_timeout * 1000))
                reply, reached = await pipe.execute(raise_on_error=False)
            if not isinstance(reply, redis.exceptions.NoScriptError):
                break
            await client.script_load(redis_scripts.COMMIT)  # it did not run: load, resend
        if isinstance(reply, Exception):
            raise reply
        return reply[0].decode(), reply[1], int(reached)

    def _when_applied(
        self, revision: int, committed: asyncio.Future[int], failure: Exception | None
    ) -> None:
        """Settle ``committed`` once the mirror has every revision up to ``revision``
        (read your writes); if the follower is slow or away, read the gap after a beat."""
        if self._feed.delivered_revision >= revision:
            _settle(committed, revision, failure)
            return
        self._applied_waiters.append((revision, committed, failure))
        if self._catch_up_timer is None:
            loop = asyncio.get_running_loop()
            self._catch_up_timer = loop.call_later(self.heartbeat, self._catch_up_waiters)

    def _wake_applied(self) -> None:
        applied = self._feed.delivered_revision
        waiting = []
        for revision, committed, failure in self._applied_waiters:
            if revision <= applied:
                _settle(committed, revision, failure)
            elif not committed.done():
                waiting.append((revision, committed, failure))
        self._applied_waiters = waiting
        if not waiting and self._catch_up_timer is not None:
            self._catch_up_timer.cancel()
            self._catch_up_timer = None

    def _catch_up_waiters(self) -> None:
        self._catch_up_timer = None
        if self._applied_waiters and (self._catcher is None or self._catcher.done()):
            self._catcher = asyncio.create_task(self._catch_up_for_waiters())

    async def _catch_up_for_waiters(self) -> None:
        latest = max(revision for revision, _, _ in self._applied_waiters)
        try:
            await self.run_async(self._catch_up_async(latest))
        except StoreUnavailableError as error:
            waiters, self._applied_waiters = self._applied_waiters, []
            for _, committed, _ in waiters:
                _settle(committed, 0, error)
        if self._applied_waiters and self._catch_up_timer is None:
            loop = asyncio.get_running_loop()
            self._catch_up_timer = loop.call_later(self.heartbeat, self._catch_up_waiters)

    def _catch_up_sync(self, revision: int) -> None:
        start = self._feed.delivered_revision + 1
        if start < revision:
            entries = self.sync_client.xrange(self.keys.history, f"{start}-0", f"{revision - 1}-0")
            if not self._deliver(cast(_Entries, entries), start):
                self._restart_from(*self._snapshot_sync())

    async def _catch_up_async(self, revision: int) -> None:
        start = self._feed.delivered_revision + 1
        if start < revision:
            client = self.async_client()
            entries = await client.xrange(self.keys.history, f"{start}-0", f"{revision - 1}-0")
            if not self._deliver(cast(_Entries, entries), start):
                self._restart_from(*await self._snapshot_async(client))
        self._wake_applied()

    # -- following the history -------------------------------------------------------------

    async def _follow(self) -> None:
        while not self._stopping:
            try:
                await self._follow_connected()
            except (redis.RedisError, OSError) as error:
                if self.available:
                    logger.warning(
                        "Redis at %s is away (%s): refusing changes until it is back",
                        self.target.describe(),
                        error,
                    )
                self.available = False
                await asyncio.sleep(self._backoff)
                self._backoff = min(2 * self._backoff, MAX_BACKOFF)

    async def _follow_connected(self) -> None:
        client = self.async_client()
        await self._check_epoch(client)
        if not self.available:
            logger.warning("Redis at %s is back", self.target.describe())
            self.available = True
        self._backoff = FIRST_BACKOFF
        block = int(self.heartbeat * 1000)
        while not self._stopping:
            # Wait for one entry only: it is most often this server's own commit, already
            # delivered, and whatever else came is read from where the feed is by then, so
            # this server's commits are not read back (the profile showed that parsing
            # them cost a seventh of a busy server's time).
            last = self._feed.delivered_revision
            reply: Any = await client.xread({self.keys.history: f"{last}-0"}, count=1, block=block)
            if not reply:
                await self._check_epoch(client)  # idle: did Redis lose its data?
                continue
            while reply:
                entries = reply[0][1]
                if entries and entries[0][1][b"e"] != self._epoch.encode():
                    await self._check_epoch(client)
                    break
                if not self._deliver(entries, last + 1):
                    self._restart_from(*await self._snapshot_async(client))
                self._wake_applied()
                # One turn of the loop first: the reply to this server's commit that woke
                # the read has most often arrived too, and its task delivers it now.
                await asyncio.sleep(0)
                last = self._feed.delivered_revision
                reply = await client.xread({self.keys.history: f"{last}-0"}, count=READ_BATCH)

    def _deliver(self, entries: _Entries, expected: int) -> bool:
        """Give the feed stream entries starting at revision ``expected``; False if the
        history before them is gone (the caller restarts from a snapshot)."""
        if not entries:
            return True
        applied = self._feed.delivered_revision
        if _revision_of(entries[-1][0]) <= applied:
            return True  # committed here (or read already)
        first = _revision_of(entries[0][0])
        if first > expected and expected <= applied + 1:
            logger.warning(
                "revisions %d to %d are no longer in Redis's history (MAXLEN %d): "
                "starting again from a snapshot",
                expected,
                first - 1,
                self.history_length,
            )
            return False
        for entry_id, fields in entries:
            revision = _revision_of(entry_id)
            if revision <= applied:
                continue  # committed here (or read already): no need to decode it
            if fields[b"e"].decode() != self._epoch:
                return True  # the follower finds the new epoch
            self._seen_revision = max(self._seen_revision, revision)
            keys, values, removed = msgpack.unpackb(fields[b"c"], raw=True)
            updates = {
                _key_str(key): decode_value(value) for key, value in zip(keys, values, strict=True)
            }
            self._feed.committed(revision, updates, {_key_str(key) for key in removed})
        return True

    async def _check_epoch(self, client: redis.asyncio.Redis) -> None:
        reply = await self._script_async(client, redis_scripts.SNAPSHOT)(
            self.keys.snapshot, [self._epoch_claim(), "0"]
        )
        # A new epoch: Redis lost its data, or the script found it rewound below a
        # revision this server saw (a failover, a restored backup) and started one.
        if reply[0].decode() != self._epoch:
            self._restart_from(*await self._snapshot_async(client))

    def _restart_from(
        self,
        epoch: str,
        revision: int,
        content: dict[str, JsonValue],
        facts: dict[str, KeyFacts],
    ) -> None:
        logger.warning(
            "Redis history %s: restarting from revision %d of epoch %s",
            "lost (new epoch)" if epoch != self._epoch else "no longer kept",
            revision,
            epoch,
        )
        self._epoch, self._seen_revision = epoch, revision
        self._feed.history_lost(epoch, revision, content, facts)
        self._wake_applied()

    def _epoch_claim(self) -> str:
        """What every script checks Redis's history against (``redis_scripts._ENSURE_EPOCH``):
        a fresh candidate epoch, the epoch this server follows, the highest revision it saw
        in it. Redis behind that revision lost history this server (and maybe its clients)
        saw, and the script starts a new epoch rather than hand out those numbers again."""
        return f"{uuid.uuid4().hex} {self._epoch} {self._seen_revision}"

    def _snapshot_sync(self) -> tuple[str, int, dict[str, JsonValue], dict[str, KeyFacts]]:
        reply = self._script(redis_scripts.SNAPSHOT)(self.keys.snapshot, [self._epoch_claim(), "1"])
        return _snapshot_from(reply)

    async def _snapshot_async(
        self, client: redis.asyncio.Redis
    ) -> tuple[str, int, dict[str, JsonValue], dict[str, KeyFacts]]:
        reply = await self._script_async(client, redis_scripts.SNAPSHOT)(
            self.keys.snapshot, [self._epoch_claim(), "1"]
        )
        return _snapshot_from(reply)

    # -- liveness ------------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._beat(self.async_client())
            except (redis.RedisError, OSError) as error:
                logger.debug("liveness beat failed: %s", error)

    def holds_trusted(self) -> bool:
        """True while no other server can have swept this one (its liveness key surely
        lives): a lock grant read now is still held. After a pause (SIGSTOP, a stalled
        host) or a cut link this is False until the next beat says what happened."""
        return asyncio.get_running_loop().time() < self._alive_until

    def after_next_beat(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(swept)`` once the next beat has reached Redis: ``swept`` True if
        the other servers released this server's leases and locks meanwhile."""
        self._after_beat.append(callback)

    async def _beat(self, client: redis.asyncio.Redis) -> None:
        """Refresh this server's liveness key; release what dead servers' sessions held."""
        ttl_ms = int(self.liveness_ttl * 1000)
        sent = asyncio.get_running_loop().time()
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.alive(self.server_id), "1", px=ttl_ms)
            pipe.sadd(self.keys.servers, self.server_id)
            pipe.smembers(self.keys.servers)
            _, added, members = await pipe.execute()
        # The key lives a whole TTL from the SET; one heartbeat of margin for scheduling.
        self._alive_until = sent + self.liveness_ttl - self.heartbeat
        # The sweep (REAP_SERVER) takes a dead server out of the set: back in it means the
        # others released everything this server's sessions held (or Redis lost its data).
        swept = bool(added) and self._beaten
        self._beaten = True
        if swept:
            self._holds_swept()
        waiting, self._after_beat = self._after_beat, []
        for callback in waiting:
            callback(swept)
        for member in members:
            server = member.decode()
            if server == self.server_id:
                continue
            removed = await self._release_bound_of_dead(client, server)
            if removed:
                logger.info("removed %d keys bound to sessions of dead server %s", removed, server)
            swept = await self._script_async(client, redis_scripts.REAP_SERVER)(
                self.keys.reap(server), [server, self.keys.lock_prefix, self.keys.base]
            )
            if swept:
                logger.info("released %d leases and locks of dead server %s", swept, server)

    def _holds_swept(self) -> None:
        locks = self._lock_table.swept() if self._lock_table is not None else {}
        logger.warning(
            "this server was cut off from Redis at %s longer than the liveness TTL (%s s): the "
            "other servers released its sessions' leases and locks; telling the sessions",
            self.target.describe(),
            self.liveness_ttl,
        )
        self._feed.holds_swept(locks)

    # -- helpers -------------------------------------------------------------------------

    def async_client(self) -> redis.asyncio.Redis:
        if self._async is None:
            raise RuntimeError("the Redis store is not started: start the server first")
        return self._async

    def _script(self, source: str) -> Any:
        script = self._sync_scripts.get(source)
        if script is None:
            script = self._sync_scripts[source] = self.sync_client.register_script(source)
        return script

    def _script_async(self, client: redis.asyncio.Redis, source: str) -> Any:
        scripts = self._async_scripts.setdefault(id(client), {})
        script = scripts.get(source)
        if script is None:
            script = scripts[source] = client.register_script(source)
        return script

    def run_sync(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            raise self._unavailable(str(error)) from None

    async def run_async(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            raise self._unavailable(str(error)) from None

    def run_script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script with the blocking client; ``StoreUnavailableError`` if Redis is away."""
        script = self._script(source)
        return self.run_sync(lambda: script(keys, args))

    async def run_script_async(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script in the event loop; ``StoreUnavailableError`` if Redis is away."""
        script = self._script_async(self.async_client(), source)
        return await self.run_async(script(keys, args))

    def _unavailable(self, reason: str) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"Redis at {self.target.describe()} is unreachable ({reason}): changes are "
            "refused until it is back; reads answer from this server's copy"
        )


def _settle(committed: asyncio.Future[int], revision: int, failure: BaseException | None) -> None:
    if committed.done():
        return
    if failure is None:
        committed.set_result(revision)
    else:
        committed.set_exception(failure)


def _lease_change_args(
    owner: Hashable, server: str, acquire: Mapping[str, float | None], release: Iterable[str]
) -> list[bytes | str]:
    released = [_key_bytes(key) for key in release]
    args: list[bytes | str] = [_owner_bytes(owner), server, str(len(released)), *released]
    for key, seconds in acquire.items():
        args += [_key_bytes(key), "-1" if seconds is None else repr(seconds * 1000.0)]
    return args


def _check_leased(blocked: list[bytes]) -> None:
    if blocked:
        names = sorted(_key_str(key) for key in blocked)
        raise ResourceLockedError(
            f"cannot lease {', '.join(map(repr, names))}: leased by another owner",
            frozenset(names),
        )


def _leases_from(flat: list[bytes]) -> list[Lease]:
    leases = []
    for index in range(0, len(flat), 3):
        left = float(flat[index + 2])
        leases.append(
            Lease(
                _key_str(flat[index]),
                _owner_from_bytes(flat[index + 1]),
                None if left < 0 else left / 1000.0,
            )
        )
    return sorted(leases, key=lambda lease: lease.key)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _snapshot_from(
    reply: list[Any],
) -> tuple[str, int, dict[str, JsonValue], dict[str, KeyFacts]]:
    epoch, revision, flat, flat_facts = reply[0].decode(), int(reply[1]), reply[2], reply[3]
    content = {_key_str(flat[i]): decode_value(flat[i + 1]) for i in range(0, len(flat), 2)}
    facts: dict[str, KeyFacts] = {}
    for i in range(0, len(flat_facts), 2):
        mod, created, version = (int(part) for part in flat_facts[i + 1].split())
        facts[_key_str(flat_facts[i])] = (mod, created, version)
    return epoch, revision, content, facts


def _revision_of(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _key_bytes(key: str) -> bytes:
    # surrogatepass: a str key with a lone surrogate is valid state and must survive.
    return key.encode("utf-8", "surrogatepass")


def _key_str(key: bytes) -> str:
    return key.decode("utf-8", "surrogatepass")


def _owner_bytes(owner: Hashable) -> bytes:
    try:
        return encode_value(owner)
    except TypeError:
        raise TypeError(
            f"a lease owner in Redis must be a str, int or None (an access token), "
            f"got {type(owner).__name__}"
        ) from None


def _owner_from_bytes(data: bytes) -> Hashable:
    owner = msgpack.unpackb(data, raw=False, use_list=False)
    return cast(Hashable, owner)
