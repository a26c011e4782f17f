"""Named read/write locks (the momotor seed's ``StateABC`` and ``LocalState``).

Many owners may hold a key shared, or one owner exclusively. Writers are preferred: a
new reader waits while any writer waits; on release the first waiting writer (FIFO)
goes; waiting readers go together when no writer waits. Under a stream of writers that
starves readers, so ``fair=True`` instead lets the readers that were waiting before the
next writer in together when a writer releases. A cancelled or timed-out waiter leaves
no trace and the lock passes on. Locks live in one asyncio event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from statehub.core.acquisition import Acquisition
from statehub.core.limits import check_seconds
from statehub.errors import LockFailedError, LockNotOwnedError, LockUpgradeError


@dataclass(slots=True)
class _Waiter:
    owner: Hashable
    exclusive: bool
    granted: asyncio.Future[int]
    ticket: int
    since: float = 0.0  # when it started waiting (the table's clock)


@dataclass(slots=True)
class _KeyLock:
    readers: dict[Hashable, int] = field(default_factory=dict)
    writer: Hashable | None = None
    writer_depth: int = 0
    waiting_writers: deque[_Waiter] = field(default_factory=deque)
    waiting_readers: list[_Waiter] = field(default_factory=list)
    #: Per holding owner: the fencing token and time of its first grant (not re-entries).
    grants: dict[Hashable, tuple[int, float]] = field(default_factory=dict)

    def idle(self) -> bool:
        return not (
            self.readers or self.writer_depth or self.waiting_writers or self.waiting_readers
        )


@dataclass(frozen=True, slots=True)
class LockHolding:
    """A key's lock as it stands: its mode, who holds it, how many wait for it."""

    key: str
    mode: str  # "exclusive" or "shared"
    holders: tuple[Hashable, ...]
    waiting: int
    #: Per holder (in ``holders``' order): the fencing token and time (s since the epoch)
    #: of its grant, or None where the table does not know (a store's own table).
    grants: tuple[tuple[int, float] | None, ...] = ()
    #: Who waits, in queue order: (owner, exclusive, since); empty where not known.
    waiters: tuple[tuple[Hashable, bool, float], ...] = ()


def _mode(exclusive: bool) -> str:
    return "exclusive" if exclusive else "shared"


class RWLockTable:
    """Read/write locks by key, for owners the caller names (a task, a session...).

    Every grant carries a fencing token: a number that only grows (within this table),
    which a resource the lock protects can compare with the last one it saw.
    """

    def __init__(self, *, fair: bool = False, clock: Callable[[], float] = time.time) -> None:
        self._locks: dict[str, _KeyLock] = {}
        #: Wall-clock time for "held since" and "waiting since" (shown to people only).
        self._clock = clock
        self._fair = fair
        self._tickets = itertools.count()
        self._fences = itertools.count(1)

    def acquire(
        self, key: str, owner: Hashable, *, exclusive: bool, timeout: float | None = None
    ) -> Acquisition[int]:
        """Take ``key`` for ``owner``; re-taking a held mode nests. ``LockFailedError`` on timeout.

        The request takes its place now, when called; await the result for the grant's
        fencing token. ``timeout``: seconds >= 0, None or infinity for no limit;
        ``ValueError`` otherwise.
        """
        if timeout is not None:
            timeout = check_seconds(timeout, f"lock on {key!r}: timeout", allow_infinity=True)
            if timeout == math.inf:
                timeout = None
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[int] = loop.create_future()
        lock = self._locks.setdefault(key, _KeyLock())
        entered = self._reenter(lock, key, owner, exclusive)
        if entered or self._free_for(lock, exclusive):
            granted.set_result(
                next(self._fences) if entered else self._grant(lock, owner, exclusive)
            )
        else:
            waiter = _Waiter(owner, exclusive, granted, next(self._tickets), self._clock())
            if exclusive:
                lock.waiting_writers.append(waiter)
            else:
                lock.waiting_readers.append(waiter)
            if timeout is not None:
                expiry = loop.call_later(timeout, _expire, waiter, key, timeout)
                granted.add_done_callback(lambda _: expiry.cancel())
            granted.add_done_callback(lambda _: self._withdraw_unless_granted(key, lock, waiter))
        return Acquisition.of(granted, lambda _: self._give_back(key, lock, owner, exclusive))

    def release(self, key: str, owner: Hashable, *, exclusive: bool) -> None:
        """Give back one hold of ``key`` in that mode."""
        lock = self._locks.get(key)
        if exclusive:
            if lock is None or lock.writer != owner or lock.writer_depth == 0:
                raise LockNotOwnedError(f"exclusive lock on {key!r} is not held by this owner")
            lock.writer_depth -= 1
            if lock.writer_depth == 0:
                lock.writer = None
        else:
            if lock is None or owner not in lock.readers:
                raise LockNotOwnedError(f"shared lock on {key!r} is not held by this owner")
            lock.readers[owner] -= 1
            if lock.readers[owner] == 0:
                del lock.readers[owner]
        if not (_holds(lock, owner, True) or owner in lock.readers):
            lock.grants.pop(owner, None)
        self._dispatch(key, lock)

    def release_owner(self, owner: Hashable) -> None:
        """Release every hold of ``owner`` on every key (its session ended)."""
        for key, lock in list(self._locks.items()):
            lock.readers.pop(owner, None)
            lock.grants.pop(owner, None)
            if lock.writer == owner:
                lock.writer, lock.writer_depth = None, 0
            self._dispatch(key, lock)

    def counts(self) -> tuple[int, int]:
        """(owners holding a lock, requests waiting for one) over every key."""
        held = waiting = 0
        for lock in self._locks.values():
            held += len(lock.readers) + (lock.writer_depth > 0)
            waiting += len(lock.waiting_writers) + len(lock.waiting_readers)
        return held, waiting

    def can_acquire(self, key: str, *, exclusive: bool) -> bool:
        """True if a new owner could take ``key`` in that mode right now without waiting."""
        lock = self._locks.get(key)
        if lock is None:
            return True
        _drop_cancelled(lock)
        return self._free_for(lock, exclusive)

    def held(self, key: str, *, exclusive: bool) -> bool:
        """True if some owner holds ``key`` in that mode right now (waiters do not count)."""
        lock = self._locks.get(key)
        if lock is None:
            return False
        return lock.writer_depth > 0 if exclusive else bool(lock.readers)

    def holdings(self) -> list[LockHolding]:
        """The keys held right now, sorted by key (a read-only snapshot)."""
        held = []
        for key in sorted(self._locks):
            lock = self._locks[key]
            _drop_cancelled(lock)
            waiting = len(lock.waiting_writers) + len(lock.waiting_readers)
            queue = sorted([*lock.waiting_writers, *lock.waiting_readers], key=lambda w: w.ticket)
            waiters = tuple((w.owner, w.exclusive, w.since) for w in queue)
            if lock.writer_depth:
                holders: tuple[Hashable, ...] = (lock.writer,)
                mode = "exclusive"
            elif lock.readers:
                holders, mode = tuple(lock.readers), "shared"
            else:
                continue
            grants = tuple(lock.grants.get(owner) for owner in holders)
            held.append(LockHolding(key, mode, holders, waiting, grants, waiters))
        return held

    def _reenter(self, lock: _KeyLock, key: str, owner: Hashable, exclusive: bool) -> bool:
        if lock.writer_depth and lock.writer == owner:
            if exclusive:
                lock.writer_depth += 1
            else:
                lock.readers[owner] = lock.readers.get(owner, 0) + 1
            return True
        if owner in lock.readers:
            if exclusive:
                raise LockUpgradeError(
                    f"cannot take {key!r} exclusively while holding it shared: release it first"
                )
            lock.readers[owner] += 1
            return True
        return False

    @staticmethod
    def _free_for(lock: _KeyLock, exclusive: bool) -> bool:
        if lock.writer_depth or lock.waiting_writers:
            return False
        return not (exclusive and lock.readers)

    def _grant(self, lock: _KeyLock, owner: Hashable, exclusive: bool) -> int:
        """Grant ``owner`` the lock; returns the grant's fencing token."""
        fence = next(self._fences)
        if exclusive:
            lock.writer, lock.writer_depth = owner, 1
        else:
            lock.readers[owner] = lock.readers.get(owner, 0) + 1
        if owner not in lock.grants:
            lock.grants[owner] = (fence, self._clock())
        return fence

    def _dispatch(self, key: str, lock: _KeyLock) -> None:
        _drop_cancelled(lock)
        if not lock.writer_depth:
            next_writer = lock.waiting_writers[0].ticket if lock.waiting_writers else None
            if next_writer is None or (self._fair and not lock.readers):
                self._admit_readers(lock, before=next_writer)
            if not lock.readers and lock.waiting_writers:
                waiter = lock.waiting_writers.popleft()
                waiter.granted.set_result(self._grant(lock, waiter.owner, True))
        self._forget_if_idle(key, lock)

    def _admit_readers(self, lock: _KeyLock, *, before: int | None) -> None:
        admitted = [w for w in lock.waiting_readers if before is None or w.ticket < before]
        if not admitted:
            return
        lock.waiting_readers = lock.waiting_readers[len(admitted) :]  # tickets ascend
        for waiter in admitted:
            waiter.granted.set_result(self._grant(lock, waiter.owner, False))

    def _withdraw_unless_granted(self, key: str, lock: _KeyLock, waiter: _Waiter) -> None:
        """A waiter's future ended: unless granted, it leaves the queue and the lock moves on."""
        granted = waiter.granted
        if not granted.cancelled() and granted.exception() is None:
            return
        queue = lock.waiting_writers if waiter.exclusive else lock.waiting_readers
        if waiter in queue:
            queue.remove(waiter)
        self._dispatch(key, lock)

    def _give_back(self, key: str, lock: _KeyLock, owner: Hashable, exclusive: bool) -> None:
        """A grant nobody took (its waiter was cancelled once granted): release it, unless
        its owner's holds were all released meanwhile (its session ended)."""
        if self._locks.get(key) is lock and _holds(lock, owner, exclusive):
            self.release(key, owner, exclusive=exclusive)

    def _forget_if_idle(self, key: str, lock: _KeyLock) -> None:
        if lock.idle() and self._locks.get(key) is lock:
            del self._locks[key]


def _holds(lock: _KeyLock, owner: Hashable, exclusive: bool) -> bool:
    if exclusive:
        return lock.writer == owner and lock.writer_depth > 0
    return owner in lock.readers


def _expire(waiter: _Waiter, key: str, timeout: float) -> None:
    if not waiter.granted.done():
        waiter.granted.set_exception(
            LockFailedError(
                f"timed out after {timeout} s waiting for the {_mode(waiter.exclusive)} "
                f"lock on {key!r}"
            )
        )


def _drop_cancelled(lock: _KeyLock) -> None:
    """Forget waiters whose future ended (cancelled, timed out): it ends at once, but its
    callback only withdraws it from the queue when the event loop next runs callbacks."""
    while lock.waiting_writers and lock.waiting_writers[0].granted.done():
        lock.waiting_writers.popleft()
    if any(waiter.granted.done() for waiter in lock.waiting_readers):
        lock.waiting_readers = [w for w in lock.waiting_readers if not w.granted.done()]


class StateABC(ABC):
    """Shared read/write locks by name: the interface local and networked states share."""

    @abstractmethod
    def get_lock(
        self, key: str, *, exclusive: bool = True, timeout: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Hold the lock on ``key`` while the ``async with`` block runs.

        Many holders in shared mode (``exclusive=False``), or one in exclusive mode.
        Raises ``LockFailedError`` if it cannot be had (``timeout`` seconds passed, refused).
        """

    @abstractmethod
    async def test_lock(self, key: str, *, exclusive: bool = True) -> bool:
        """True if the lock could be taken in that mode right now (transient information)."""


class LocalState(StateABC):
    """In-process read/write locks; the owner is the asyncio task that takes the lock.

    ``fair=True``: readers waiting before the next writer are not overtaken by it.
    """

    def __init__(self, *, fair: bool = False) -> None:
        self._table = RWLockTable(fair=fair)

    @asynccontextmanager
    async def get_lock(
        self, key: str, *, exclusive: bool = True, timeout: float | None = None
    ) -> AsyncIterator[None]:
        owner = asyncio.current_task()
        await self._table.acquire(key, owner, exclusive=exclusive, timeout=timeout)
        try:
            yield
        finally:
            self._table.release(key, owner, exclusive=exclusive)

    async def test_lock(self, key: str, *, exclusive: bool = True) -> bool:
        return self._table.can_acquire(key, exclusive=exclusive)
