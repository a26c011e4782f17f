"""Read/write locks shared by every server over one Redis, with fencing tokens.

The same promises as ``core.rwlock.RWLockTable`` (non-fair mode): many shared holders or
one exclusive one; a new reader waits while any writer waits, on any server; writers go
in FIFO order; a timeout raises ``LockFailed``; a cancelled or timed-out waiter leaves no
trace. The queue and the holds live in Redis and every change to them is one Lua script
(``redis_scripts.LOCK_*``), so the rules hold across servers. A waiter learns of its
grant from a Redis Pub/Sub message, or, if that message was lost, from a poll.

Every grant carries a fencing token: a number from one counter in Redis that only grows,
which a protected resource can compare with the last one it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from typing import Any

import redis

from statehub.core.rwlock import LockHolding
from statehub.errors import LockFailed, LockNotOwnedError, LockUpgradeError
from statehub.protocol.codec import encode_value
from statehub.store import redis_scripts
from statehub.store.errors import StoreUnavailableError
from statehub.store.redis import RedisStore

logger = logging.getLogger(__name__)

#: Seconds between two checks of a waiter's grant when no Pub/Sub message came.
POLL_INTERVAL = 0.5


class RedisLockTable:
    """Read/write locks by key in the Redis of ``store``, for owners this server names."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._base = store.keys.base
        self._prefix = store.keys.lock_prefix
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    async def acquire(
        self, key: str, owner: Hashable, *, exclusive: bool, timeout: float | None = None
    ) -> int:
        """Take ``key`` for ``owner`` and return the grant's fencing token."""
        owner_id, mode = self._owner_id(owner), _mode(exclusive)
        args = [self._base, self._prefix, key, owner_id, mode]
        # A command is never cancelled half-way (redis-py would leave its connection out
        # of step): it completes, and a cancelled caller undoes what it did.
        asking = asyncio.ensure_future(self._run(redis_scripts.LOCK_ACQUIRE, args))
        try:
            reply = await asyncio.shield(asking)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                undo = await asking
                if undo[0] == b"granted":
                    await self._run(redis_scripts.LOCK_RELEASE, args)
                elif undo[0] == b"queued":
                    await self._abandon(key, owner_id, mode, str(int(undo[1])))
            raise
        if reply[0] == b"granted":
            return int(reply[1])
        if reply[0] == b"upgrade":
            raise LockUpgradeError(
                f"cannot take {key!r} exclusively while holding it shared: release it first"
            )
        ticket = str(int(reply[1]))
        self._ensure_listener()
        try:
            async with asyncio.timeout(timeout):
                return await self._wait_granted(ticket, args)
        except TimeoutError:
            await asyncio.shield(self._abandon(key, owner_id, mode, ticket))
            raise LockFailed(
                f"timed out after {timeout} s waiting for the "
                f"{'exclusive' if exclusive else 'shared'} lock on {key!r}"
            ) from None
        except BaseException:
            await asyncio.shield(self._abandon(key, owner_id, mode, ticket))
            raise

    def release(self, key: str, owner: Hashable, *, exclusive: bool) -> None:
        """Give back one hold of ``key`` in that mode."""
        args = [self._base, self._prefix, key, self._owner_id(owner), _mode(exclusive)]
        released = self._run_sync(redis_scripts.LOCK_RELEASE, args)
        if not released:
            raise LockNotOwnedError(
                f"{'exclusive' if exclusive else 'shared'} lock on {key!r} is not held "
                "by this owner"
            )

    def release_owner(self, owner: Hashable) -> None:
        """Release every hold of ``owner`` on every key (its session ended)."""
        args = [self._base, self._prefix, self._owner_id(owner)]
        try:
            self._run_sync(redis_scripts.LOCK_RELEASE_OWNER, args)
        except StoreUnavailableError as error:  # its server's sweep releases them later
            logger.warning("could not release the locks of %r in Redis: %s", owner, error)

    def can_acquire(self, key: str, *, exclusive: bool) -> bool:
        """True if a new owner could take ``key`` in that mode right now without waiting."""
        return bool(self._run_sync(redis_scripts.LOCK_TEST, [self._prefix, key, _mode(exclusive)]))

    def counts(self) -> tuple[int, int]:
        """(owners holding a lock, requests waiting for one) over every key, all servers."""
        held = waiting = 0
        for holding in self.holdings():
            held += len(holding.holders)
            waiting += holding.waiting
        return held, waiting

    def holdings(self) -> list[LockHolding]:
        """The keys held right now on any server; holders are Redis owner ids."""
        client = self._store.sync_client

        def read() -> list[LockHolding]:
            held = []
            members: Any = client.smembers(self._base + "lockkeys")
            for raw in sorted(members):
                key = raw.decode()
                fields: Any = client.hgetall(f"{self._prefix}:{key}")
                waiting: Any = client.llen(f"{self._prefix}q:{key}")
                writer = fields.get(b"writer")
                if writer is not None:
                    held.append(LockHolding(key, "exclusive", (writer.decode(),), int(waiting)))
                    continue
                readers = tuple(name.decode()[2:] for name in fields if name.startswith(b"r:"))
                if readers:
                    held.append(LockHolding(key, "shared", readers, int(waiting)))
            return held

        return self._store.run_sync(read)

    async def close(self) -> None:
        """Stop listening for grants."""
        self._closing = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _wait_granted(self, ticket: str, hold: list[str]) -> int:
        """The fence once ``ticket`` is granted; ``hold`` names the hold to give back if
        this is cancelled just as the grant is taken."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = future
        try:
            while True:
                taking = asyncio.ensure_future(
                    self._run(redis_scripts.LOCK_TAKE, [self._base, ticket])
                )
                try:
                    fence = await asyncio.shield(taking)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        if await taking is not None:
                            await self._run(redis_scripts.LOCK_RELEASE, hold)
                    raise
                if fence is not None:
                    return int(fence)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_INTERVAL):
                        await asyncio.shield(future)
                if future.done():
                    future = asyncio.get_running_loop().create_future()
                    self._waiting[ticket] = future
        finally:
            self._waiting.pop(ticket, None)

    async def _abandon(self, key: str, owner_id: str, mode: str, ticket: str) -> None:
        args = [self._base, self._prefix, key, owner_id, mode, ticket]
        try:
            await self._run(redis_scripts.LOCK_ABANDON, args)
        except StoreUnavailableError as error:  # its server's sweep releases it later
            logger.warning("could not withdraw lock wait %s on %r: %s", ticket, key, error)

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="statehub-redis-locks")

    async def _listen(self) -> None:
        """Wake local waiters named in grant messages (polling covers lost messages)."""
        while not self._closing:
            try:
                pubsub = self._store.async_client().pubsub()
                async with pubsub:
                    await pubsub.subscribe(self._base + "granted")
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        for ticket in message["data"].decode().split():
                            future = self._waiting.get(ticket)
                            if future is not None and not future.done():
                                future.set_result(None)
            except (redis.RedisError, OSError) as error:
                logger.debug("lock grant listener: %s; retrying", error)
                await asyncio.sleep(POLL_INTERVAL)

    def _owner_id(self, owner: Hashable) -> str:
        try:
            encoded = encode_value(owner)
        except TypeError:
            raise TypeError(
                f"a lock owner must be made of str, int and tuples, got {owner!r}"
            ) from None
        return f"{self._store.server_id}:{encoded.hex()}"

    async def _run(self, source: str, args: list[str]) -> Any:
        return await self._store.run_script_async(source, [], args)

    def _run_sync(self, source: str, args: list[str]) -> Any:
        return self._store.run_script(source, [], args)


def _mode(exclusive: bool) -> str:
    return "w" if exclusive else "r"
