"""Read/write locks shared by every server over one Redis, with fencing tokens.

The same promises as ``core.rwlock.RWLockTable`` (non-fair mode): many shared holders or
one exclusive one; a new reader waits while any writer waits, on any server; writers go
in FIFO order; a timeout raises ``LockFailedError``; a cancelled or timed-out waiter leaves no
trace. The queue and the holds live in Redis and every change to them is one Lua script
(``redis_scripts.LOCK_*``), so the rules hold across servers. A request is queued for
Redis when it is made (``redis_ordered``), so one server's requests reach Redis in the
order they came, and nothing waits on a blocking client. A waiter learns of its grant
from a Redis Pub/Sub message, or, if that message was lost, from a poll.

Every grant carries a fencing token: a number from one counter in Redis that only grows,
which a protected resource can compare with the last one it saw.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, cast

import msgpack
import redis

from statehub.core.acquisition import Acquisition
from statehub.core.limits import check_seconds
from statehub.core.rwlock import LockHolding
from statehub.errors import (
    LockFailedError,
    LockNotOwnedError,
    LockUpgradeError,
    StoreUnavailableError,
)
from statehub.protocol.codec import encode_value
from statehub.store import redis_scripts
from statehub.store.answers import Answer, mapped
from statehub.store.redis_link import RedisLink
from statehub.store.redis_ordered import log_failure

logger = logging.getLogger(__name__)

#: Seconds between two checks of a waiter's grant when no Pub/Sub message came.
POLL_INTERVAL = 0.5


class RedisLockTable:
    """Read/write locks by key in the Redis of ``store``, for owners this server names.

    Every step is a script sent through the store's ``OrderedScripts``: a request is
    queued when made, so Redis sees this server's lock requests in the order they came.
    """

    def __init__(self, store: RedisLink) -> None:
        self._store = store
        self._scripts = store.ordered
        self._base = store.keys.base
        self._prefix = store.keys.lock_prefix
        self._waiting: dict[str, _Request] = {}
        #: What this server's owners hold (owner -> (key, exclusive) -> holds), to tell
        #: them what they lost if the other servers sweep this one (``swept``).
        self._holds: dict[Hashable, dict[tuple[str, bool], int]] = {}
        #: Requests not answered yet (a reply may be in flight): a sweep fails them all.
        self._unsettled: dict[_Request, None] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    def acquire(
        self, key: str, owner: Hashable, *, exclusive: bool, timeout: float | None = None
    ) -> Acquisition[int]:
        """Take ``key`` for ``owner``: queued in Redis's order now; await it for the fence."""
        if timeout is not None:
            timeout = check_seconds(timeout, f"lock on {key!r}: timeout", allow_infinity=True)
        loop = asyncio.get_running_loop()
        hold = [self._base, self._prefix, key, self._owner_id(owner), _mode(exclusive)]
        request = _Request(hold, loop.create_future(), owner, key, exclusive)
        self._unsettled[request] = None
        request.grant.add_done_callback(lambda _: self._unsettled.pop(request, None))
        asked = self._scripts.submit(redis_scripts.LOCK_ACQUIRE, [], hold)
        asked.add_done_callback(lambda done: self._answered(request, done))
        if timeout is not None and timeout != math.inf:
            message = (
                f"timed out after {timeout} s waiting for the "
                f"{'exclusive' if exclusive else 'shared'} lock on {key!r}"
            )
            expiry = loop.call_later(timeout, self._expire, request, LockFailedError(message))
            request.grant.add_done_callback(lambda _: expiry.cancel())
        request.grant.add_done_callback(lambda _: self._withdraw_unless_granted(request))
        return Acquisition.of(request.grant, lambda _: self._release_logged(hold))

    def release(self, key: str, owner: Hashable, *, exclusive: bool) -> Answer[None]:
        """Give back one hold of ``key`` in that mode (queued now; await the outcome)."""
        args = [self._base, self._prefix, key, self._owner_id(owner), _mode(exclusive)]
        holds = self._holds.get(owner, {})
        if holds.get((key, exclusive)):
            holds[(key, exclusive)] -= 1
            if not holds[(key, exclusive)]:
                del holds[(key, exclusive)]
        return mapped(
            self._scripts.submit(redis_scripts.LOCK_RELEASE, [], args),
            lambda released: _check_released(released, key, exclusive),
        )

    def release_owner(self, owner: Hashable) -> None:
        """Release every hold of ``owner`` on every key (its session ended): queued now.

        Its session cannot wait: a failure is logged, and the server's sweep releases
        them if this server is gone.
        """
        self._holds.pop(owner, None)
        args = [self._base, self._prefix, self._owner_id(owner)]
        released = self._scripts.submit(redis_scripts.LOCK_RELEASE_OWNER, [], args)
        released.add_done_callback(log_failure(f"releasing the locks of {owner!r}"))

    def can_acquire(self, key: str, *, exclusive: bool) -> Answer[bool]:
        """True if a new owner could take ``key`` in that mode right now without waiting."""
        asked = self._scripts.submit(
            redis_scripts.LOCK_TEST, [], [self._prefix, key, _mode(exclusive)]
        )
        return mapped(asked, bool)

    def held(self, key: str, *, exclusive: bool) -> Answer[bool]:
        """True if an owner on any server holds ``key`` in that mode right now."""
        asked = self._scripts.submit(
            redis_scripts.LOCK_HELD, [], [self._prefix, key, _mode(exclusive)]
        )
        return mapped(asked, bool)

    def counts(self) -> tuple[int, int]:
        """(owners holding a lock, requests waiting for one) over every key, all servers.

        Synchronous for the metrics collector (called off the event loop's hot path, once
        per scrape): one round trip with the blocking client.
        """
        held = waiting = 0
        reply = self._store.run_script(redis_scripts.LIST_LOCKS, [], [self._base, self._prefix])
        for holding in _holdings_from(reply):
            held += len(holding.holders)
            waiting += holding.waiting
        return held, waiting

    def holdings(self) -> Answer[list[LockHolding]]:
        """The keys held right now on any server, with the owners holding them."""
        asked = self._scripts.submit(redis_scripts.LIST_LOCKS, [], [self._base, self._prefix])
        return mapped(asked, _holdings_from)

    async def close(self) -> None:
        """Stop listening for grants."""
        self._closing = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        for request in list(self._waiting.values()):
            _fail(request.grant, StoreUnavailableError("this server is stopping"))

    # -- one request's way to its grant -------------------------------------------------

    def _answered(self, request: _Request, asked: asyncio.Future[Any]) -> None:
        """LOCK_ACQUIRE replied: granted, queued (wait for the grant), or refused."""
        if (error := asked.exception()) is not None:
            _fail(request.grant, error)
            return
        reply = asked.result()
        if reply[0] == b"granted":
            self._grant(request, int(reply[1]))
        elif reply[0] == b"upgrade":
            key = request.hold[2]
            _fail(
                request.grant,
                LockUpgradeError(
                    f"cannot take {key!r} exclusively while holding it shared: release it first"
                ),
            )
        else:
            request.ticket = str(int(reply[1]))
            if request.grant.done():
                self._abandon(request)
            elif request.expired is not None:
                self._expire(request, request.expired)
            else:
                self._waiting[request.ticket] = request
                self._ensure_listener()
                self._take(request)  # granted before the listener heard of it, perhaps

    def _take(self, request: _Request) -> None:
        """Ask whether ``request``'s ticket was granted (a grant message came, or a poll)."""
        if request.grant.done() or request.withdrawn:
            return
        if request.taking:  # that answer may predate the grant: ask again after it
            request.again = True
            return
        request.taking, request.again = True, False
        taking = self._scripts.submit(redis_scripts.LOCK_TAKE, [], [self._base, request.ticket])
        taking.add_done_callback(lambda done: self._took(request, done))

    def _took(self, request: _Request, taking: asyncio.Future[Any]) -> None:
        request.taking = False
        fence = None if taking.exception() is not None else taking.result()
        if fence is None:
            if request.again:
                self._take(request)
            elif not (request.grant.done() or request.withdrawn):
                self._poll_later(request)
            return
        self._waiting.pop(str(request.ticket), None)
        self._grant(request, int(fence))

    def _grant(self, request: _Request, fence: int) -> None:
        """Hand a grant Redis made to its waiter, unless this server may have been swept
        since (a grant read after a pause longer than the liveness TTL was released by the
        others' sweep): then only once the next beat says it was not."""
        if request.grant.done():  # cancelled meanwhile: the grant was ours to give back
            self._release_logged(request.hold)
        elif self._store.holds_trusted():
            request.grant.set_result(fence)
            holds = self._holds.setdefault(request.owner, {})
            holds[(request.key, request.exclusive)] = (
                holds.get((request.key, request.exclusive), 0) + 1
            )
        else:
            self._store.after_next_beat(lambda swept: self._grant_after_beat(request, fence, swept))

    def _grant_after_beat(self, request: _Request, fence: int, swept: bool) -> None:
        if not swept:
            self._grant(request, fence)
        else:
            mode = "exclusive" if request.exclusive else "shared"
            _fail(
                request.grant,
                LockFailedError(
                    f"the {mode} lock on {request.key!r} (fence {fence}) was granted while "
                    "this server was cut off from Redis, and the other servers released it "
                    "when they swept this server: try again"
                ),
            )

    def swept(self) -> dict[Hashable, list[tuple[str, bool]]]:
        """The other servers released every hold and wait of this server's owners: what
        each owner held (and forget it). Every request not answered yet fails: its wait is
        gone, and a grant read from Redis now may predate the sweep (if it does not, it is
        given back)."""
        holds, self._holds = self._holds, {}
        self._waiting = {}
        for request in list(self._unsettled):
            mode = "exclusive" if request.exclusive else "shared"
            _fail(
                request.grant,
                LockFailedError(
                    f"the wait for the {mode} lock on {request.key!r} was withdrawn: this "
                    "server was cut off from Redis and the other servers swept it"
                ),
            )
        return {owner: sorted(held) for owner, held in holds.items() if held}

    def _poll_later(self, request: _Request) -> None:
        """Poll in case the grant message is lost (Pub/Sub does not keep messages)."""
        loop = asyncio.get_running_loop()
        if request.poll is not None:
            request.poll.cancel()
        request.poll = loop.call_later(POLL_INTERVAL, self._take, request)

    def _expire(self, request: _Request, error: LockFailedError) -> None:
        """The timeout passed: the caller gets ``error`` once Redis has withdrawn the wait
        (so no other server sees it after that), unless the grant came first."""
        if request.grant.done():
            return
        request.expired = error
        if request.ticket is None:
            return  # withdrawn once LOCK_ACQUIRE replies
        withdrawn = self._abandon(request)
        withdrawn.add_done_callback(lambda _: _fail(request.grant, error))

    def _withdraw_unless_granted(self, request: _Request) -> None:
        """The request's future ended: unless granted, it leaves the queue in Redis."""
        if request.poll is not None:
            request.poll.cancel()
        grant = request.grant
        if not grant.cancelled() and grant.exception() is None:
            return
        if request.ticket is not None:  # else its LOCK_ACQUIRE reply will undo it
            self._abandon(request)

    def _abandon(self, request: _Request) -> asyncio.Future[Any]:
        """Leave the queue, or give back the hold if it was granted meanwhile (once)."""
        if request.withdrawn is None:
            self._waiting.pop(str(request.ticket), None)
            args = [*request.hold, str(request.ticket)]
            request.withdrawn = self._scripts.submit(redis_scripts.LOCK_ABANDON, [], args)
            request.withdrawn.add_done_callback(
                log_failure(f"withdrawing lock wait {request.ticket} on {request.hold[2]!r}")
            )
        return request.withdrawn

    def _release_logged(self, hold: list[str]) -> None:
        released = self._scripts.submit(redis_scripts.LOCK_RELEASE, [], hold)
        released.add_done_callback(log_failure(f"giving back the lock on {hold[2]!r}"))

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
                            request = self._waiting.get(ticket)
                            if request is not None:
                                self._take(request)
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


@dataclass(eq=False, slots=True)
class _Request:
    """One lock request of this server: its hold's script arguments, its future, and
    once queued in Redis its ticket."""

    hold: list[str]
    grant: asyncio.Future[int]
    owner: Hashable
    key: str
    exclusive: bool
    ticket: str | None = None
    taking: bool = False
    again: bool = False
    poll: asyncio.TimerHandle | None = None
    expired: LockFailedError | None = None
    withdrawn: asyncio.Future[Any] | None = None


def _fail(grant: asyncio.Future[int], error: BaseException) -> None:
    if not grant.done():
        grant.set_exception(error)


def _check_released(released: object, key: str, exclusive: bool) -> None:
    if not released:
        raise LockNotOwnedError(
            f"{'exclusive' if exclusive else 'shared'} lock on {key!r} is not held by this owner"
        )


def _holdings_from(reply: list[Any]) -> list[LockHolding]:
    """LIST_LOCKS's reply as holdings, sorted by key."""
    held = []
    for raw_key, flat, waiting in sorted(reply):
        key = raw_key.decode()
        fields = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
        writer = fields.get(b"writer")
        if writer is not None:
            held.append(LockHolding(key, "exclusive", (_owner_of(writer),), int(waiting)))
            continue
        readers = tuple(_owner_of(name[2:]) for name in fields if name.startswith(b"r:"))
        if readers:
            held.append(LockHolding(key, "shared", readers, int(waiting)))
    return held


def _owner_of(owner_id: bytes) -> Hashable:
    """The owner a Redis owner id (``RedisLockTable._owner_id``) was made from: a session's
    ``(session id, owner name)``, so that listings name the holder and see their own."""
    _, _, encoded = owner_id.partition(b":")
    return cast(Hashable, msgpack.unpackb(bytes.fromhex(encoded.decode()), use_list=False))


def _mode(exclusive: bool) -> str:
    return "w" if exclusive else "r"
