"""AsyncClient: the statehub client; ``Client`` is a sync facade over it.

It offers NanoVer's client calls (a mirror of the whole state kept by a subscription,
``attempt_update_state``, ``attempt_update_locks``, ``run_command``...) and Pythonic ones
(``get``/``set``/``update``, ``async for`` over changes, ``async with`` read/write locks).
All calls pipeline over one session stream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any, TypeVar, overload

from statehub.client.address import resolve_target
from statehub.client.call_shapes import (
    REMOVE_ATTEMPTS,
    HeldLock,
    checked_lock_wait,
    entry_from_wire,
    expectation,
    history_arguments,
    invoke_event,
    key_versions,
    lock_deadline,
    lock_lost_error,
    refuse_taken_leases,
    take_holds,
    tell_lost,
    update_arguments,
)
from statehub.client.changes import CoalescingBuffer, HoldsLost, StateChange
from statehub.client.connection import Connection
from statehub.client.deprecation import warn_renamed
from statehub.client.listing import (
    LeaseInfo,
    LockInfo,
    ReleasedHold,
    SessionInfo,
    lock_from_wire,
    released_from_wire,
    session_from_wire,
)
from statehub.client.state_mirror import StateMirror
from statehub.client.subscription import Message, Subscription
from statehub.client.timeouts import (
    CLIENT_DEFAULT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    Timeout,
    checked_timeout,
    timed_out,
)
from statehub.client.tls import ClientTls
from statehub.core.change import DictionaryChange
from statehub.core.entries import Entry
from statehub.core.events import Event
from statehub.core.key_history import KeyVersion
from statehub.core.pacing import check_interval
from statehub.core.rwlock import StateABC
from statehub.core.values import JsonValue, check_key, checked_copy
from statehub.endpoints.remote import AsyncEndpointCalls
from statehub.errors import (
    ConflictError,
    ConnectionLostError,
    LockFailedError,
    LockNotOwnedError,
    ResourceLockedError,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

_client_numbers = itertools.count(1)


class ChangeStream:
    """``async for change in client.subscribe(...)``: coalesced changes as ``StateChange``.

    The first change is a snapshot of the state under the prefix, then deltas. After a
    reconnect the stream resumes from the last revision seen (a delta, or a snapshot if
    the server no longer has that history). Also an async context manager; leaving it,
    ``aclose()``, or dropping the stream unsubscribes.
    """

    def __init__(self, client: AsyncClient, interval: float, prefix: str) -> None:
        self._client = client
        self._interval = interval
        self._prefix = prefix
        self._buffer = CoalescingBuffer()
        self._subscription: Subscription | None = None
        self._closed = False
        self._error: Exception | None = None

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> StateChange:
        if self._closed:
            raise StopAsyncIteration
        if self._subscription is None:
            await self.start()
        change = await self._buffer.take()
        if change is None:
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        return change

    async def start(self) -> None:
        """Subscribe now (the first ``__anext__`` does it otherwise)."""
        if self._subscription is not None:
            return
        connection = await self._client._connection()
        push = weakref.WeakMethod(self._buffer.push)
        holder: list[Subscription] = []

        def handler(message: Message) -> None:
            deliver = push()
            if deliver is None:  # the stream was dropped without being closed
                if holder:
                    connection.unsubscribe(holder[0])
                return
            deliver(message)

        subscription = await connection.subscribe(
            self._interval, self._prefix, handler, timeout=self._client.timeout
        )
        holder.append(subscription)
        self._subscription = subscription
        self._client._streams.add(self)
        if self._closed:
            connection.unsubscribe(subscription)

    async def aclose(self) -> None:
        self.close()

    def mark_lost(self, lost: HoldsLost) -> None:
        """The client lost leases or locks: the next change yielded says so."""
        if not self._closed:
            self._buffer.mark(lost)

    def fail(self, error: Exception) -> None:
        """End the stream with ``error`` (the connection is gone for good)."""
        self._error = error
        self.close()

    def close(self) -> None:
        """Unsubscribe and end the iteration (callable from the event loop's thread)."""
        if self._closed:
            return
        self._closed = True
        if self._subscription is not None and self._client._conn is not None:
            self._client._conn.unsubscribe(self._subscription)
        self._buffer.wake()

    async def __aenter__(self) -> ChangeStream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(AsyncEndpointCalls, StateABC):
    """A client of a statehub server (``address``, ``port``; default port 38802).

    ``credential``: a bearer token (or JWT) for a server started with ``--auth``.
    ``tls``: a ``ClientTls`` (CA bundle, client certificate), or True for the system's
    CAs; an address ``statehubs://host:port`` turns TLS on too. ``timeout``: seconds a
    call waits for its answer (10 s; None: no limit; every call also takes ``timeout=``),
    else ``statehub.TimeoutError`` naming the call and the server; ``connect_timeout``:
    seconds to open a session (5 s), else ``ConnectionLostError``.

    Connect with ``async with AsyncClient(...)`` or ``await client.connect()``. When the
    server goes away, waiting and new calls raise ``ConnectionLostError`` while the client
    reconnects with backoff; subscriptions resume, and the ``leases_lost`` /
    ``locks_lost`` events say which leases and locks the lost session took with it
    (a lock block then exits with ``LockFailedError``). The same events fire when an admin
    force-releases one of this client's locks or leases (``force_release``).

    Events (``statehub.Event``; callbacks run in the client's event loop, must not block):
    ``connection_lost(reason=)``, ``reconnected()``, ``leases_lost(keys=)``,
    ``locks_lost(keys=)``.
    """

    def __init__(
        self,
        address: str | None = None,
        port: int | None = None,
        *,
        token: str | None = None,
        credential: str | None = None,
        tls: ClientTls | bool | None = None,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        reconnect: bool = True,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
    ) -> None:
        #: The server: ``address`` (a host or a URL: ``statehub://`` over plain TCP,
        #: ``statehubs://`` for TLS, ``statehub+grpc://``/``statehubs+grpc://`` for gRPC,
        #: ``ws://``/``wss://`` for WebSocket) and ``port``, or ``STATEHUB_URL`` /
        #: ``STATEHUB_HOST`` / ``STATEHUB_PORT`` (see ``address.py``).
        self.target = resolve_target(address, port)
        self.address = self.target.host
        self.port = self.target.port
        self.name = name if name is not None else f"statehub-python-{next(_client_numbers)}"
        #: Seconds a call waits for its answer unless it says otherwise (None: no limit).
        self.timeout = checked_timeout(timeout)
        checked_timeout(connect_timeout, "connect_timeout")
        if tls is True or (self.target.tls and tls is None):
            tls = ClientTls()
        self._settings: dict[str, Any] = {
            "token": token,
            "credential": credential,
            "tls": tls or None,
            "client_name": self.name,
            "connect_timeout": connect_timeout,
            "reconnect": reconnect,
            "backoff_initial": backoff_initial,
            "backoff_max": backoff_max,
        }
        self._conn: Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self.connection_lost = Event()
        self.reconnected = Event()
        self.leases_lost = Event()
        self.locks_lost = Event()

        self._mirror = StateMirror()
        self._streams: weakref.WeakSet[ChangeStream] = weakref.WeakSet()

        self._leases: dict[str, float | None] = {}
        #: Leases the server released while the session lived on, with why: the next
        #: update touching one raises ``LeaseLostError`` (taking the lease again forgets it).
        self._leases_taken: dict[str, str] = {}
        self._held_locks: set[HeldLock] = set()
        self._task_owners: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = (
            weakref.WeakKeyDictionary()
        )
        self._owner_prefix = uuid.uuid4().hex[:12]
        self._owner_numbers = itertools.count(1)

    # -- connection ----------------------------------------------------------------

    async def connect(self) -> None:
        """Open the session; ``ConnectionLostError`` if the server cannot be reached."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is None:
                self._conn = Connection(
                    self.target.dial_address,
                    self.port,
                    on_lost=self._on_lost,
                    on_restored=self._on_restored,
                    on_holds_lost=self._on_holds_lost,
                    **self._settings,
                )
            await self._conn.connect()

    async def _connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.generation == 0:
            await self.connect()
            conn = self._conn
            assert conn is not None
        return conn

    async def _request(self, op: str, /, **arguments: Any) -> Message:
        """A request waiting the client's ``timeout`` (tests send raw arguments with it)."""
        return await self._timed_request(op, CLIENT_DEFAULT, **arguments)

    async def _timed_request(self, op: str, timeout: Timeout, /, **arguments: Any) -> Message:
        conn = self._conn
        if conn is None or conn.generation == 0:
            conn = await self._connection()
        return await conn.call(op, arguments, self._seconds(timeout))

    def _seconds(self, timeout: Timeout) -> float | None:
        """A call's ``timeout=`` as seconds (None: no limit)."""
        return self.timeout if timeout is CLIENT_DEFAULT else checked_timeout(timeout)

    @property
    def connected(self) -> bool:
        """True while a session with the server is open."""
        return self._conn is not None and self._conn.connected

    @property
    def session(self) -> str | None:
        """The server's id of the current session."""
        return self._conn.session if self._conn is not None else None

    @property
    def token(self) -> str | None:
        """The owner of this session's leases (the server makes it from session and identity)."""
        return self._conn.token if self._conn is not None else None

    @property
    def epoch(self) -> object:
        """The id of the server's history that revisions count in, from the current
        session's hello (None before the first): it changes when history was lost or
        rewritten (a Redis restart without data, a failover that lost writes), so a
        revision means something only together with the epoch it was seen in."""
        return self._conn.epoch if self._conn is not None else None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until (re)connected; ``ConnectionLostError`` if ``timeout`` s pass first."""
        conn = await self._connection()
        await conn.wait_connected(timeout)

    async def close(self) -> None:
        """End the session; leases and locks held through it are released by the server.

        Open ``subscribe`` streams end (``async for`` loops finish).
        """
        if self._conn is not None:
            await self._conn.close()
        for stream in list(self._streams):
            stream.close()
        self._mirror.fail(ConnectionLostError("the client was closed"))

    async def aclose(self) -> None:
        """``close()`` under the name ``ChangeStream``, async generators and other asyncio
        clients close with, so one ``await x.aclose()`` ends either."""
        await self.close()

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _on_lost(self, reason: str) -> None:
        now = time.monotonic()
        leases = sorted(
            key for key, deadline in self._leases.items() if deadline is None or deadline > now
        )
        self._leases.clear()
        locks = sorted({held.key for held in self._held_locks if not held.lost})
        for held in self._held_locks:
            held.lost = True
        if not self._settings["reconnect"]:  # nothing will resume: end what waits for data
            message = f"lost the connection to statehub at {self.target.host_port}: {reason}"
            for stream in list(self._streams):
                stream.fail(ConnectionLostError(message))
            self._mirror.fail(ConnectionLostError(message))
        invoke_event(self.connection_lost, reason=reason)
        self._tell_lost(leases, locks, f"the session ended: {reason}")

    def _on_holds_lost(self, lost: Message) -> None:
        """The server took leases and locks of this live session away (an admin force-released
        them, or the server was cut off from the shared store and swept): say so."""
        leases, locks = take_holds(lost, self._leases, self._leases_taken, self._held_locks)
        self._tell_lost(leases, locks, str(lost.get("reason") or "released by the server"))

    def _tell_lost(self, leases: list[str], locks: list[str], reason: str) -> None:
        tell_lost(self._streams, self.leases_lost, self.locks_lost, (leases, locks, reason))

    def _on_restored(self) -> None:
        invoke_event(self.reconnected)

    # -- Pythonic state calls ------------------------------------------------------

    @overload
    async def get(self, key: str, *, timeout: Timeout = CLIENT_DEFAULT) -> JsonValue: ...
    @overload
    async def get(
        self, key: str, default: T, *, timeout: Timeout = CLIENT_DEFAULT
    ) -> JsonValue | T: ...

    async def get(
        self, key: str, default: object = None, *, timeout: Timeout = CLIENT_DEFAULT
    ) -> object:
        """The value at ``key`` on the server, or ``default`` (None) if there is no such key.

        ``timeout``: seconds to wait for the answer (the client's ``timeout`` unless
        given; None: no limit), else ``statehub.TimeoutError``; every call takes it.
        """
        reply = await self._timed_request("get", timeout, keys=[check_key(key)])
        values: dict[str, JsonValue] = reply["values"]
        return values.get(key, default)

    async def entry(self, key: str, *, timeout: Timeout = CLIENT_DEFAULT) -> Entry | None:
        """``key``'s value with its facts, or None if there is no such key.

        ``Entry.mod_revision`` is the revision of the key's last change (what
        ``set(..., if_revision=)`` compares with), ``create_revision`` the revision that
        created it, ``version`` its number of changes since (1 when created).
        """
        reply = await self._timed_request("get", timeout, keys=[check_key(key)], facts=True)
        values: dict[str, JsonValue] = reply["values"]
        if key not in values:
            return None
        return entry_from_wire(key, values[key], reply["facts"][key])

    async def entries(self, prefix: str = "", *, timeout: Timeout = CLIENT_DEFAULT) -> list[Entry]:
        """The keys starting with ``prefix`` with values and facts, read at one revision."""
        reply = await self._timed_request(
            "keys", timeout, prefix=check_key(prefix), values=True, facts=True
        )
        values: dict[str, JsonValue] = reply["values"]
        facts = reply["facts"]
        return [entry_from_wire(key, value, facts[key]) for key, value in values.items()]

    async def history(
        self,
        key: str,
        *,
        limit: int | None = None,
        since: int | None = None,
        timeout: Timeout = CLIENT_DEFAULT,
    ) -> list[KeyVersion]:
        """``key``'s last versions kept by the server, oldest first: value (or
        ``removed``), revision, time, and who (``by``, ``.session``, ``.identity``).

        ``since``: only versions after that revision; ``limit``: only the newest that
        many. Empty if the server keeps no history (``statehub serve --history N``).
        """
        reply = await self._timed_request(
            "history", timeout, **history_arguments(key, limit, since)
        )
        return key_versions(key, reply)

    async def get_all(self, *, timeout: Timeout = CLIENT_DEFAULT) -> dict[str, JsonValue]:
        """The whole state, read from the server."""
        reply = await self._timed_request("get", timeout, keys=None)
        values: dict[str, JsonValue] = reply["values"]
        return values

    async def get_many(
        self, keys: Iterable[str], *, timeout: Timeout = CLIENT_DEFAULT
    ) -> dict[str, JsonValue]:
        """The values of ``keys`` read at one revision; keys that do not exist are left out."""
        reply = await self._timed_request("get", timeout, keys=[check_key(key) for key in keys])
        values: dict[str, JsonValue] = reply["values"]
        return values

    async def keys(self, prefix: str = "", *, timeout: Timeout = CLIENT_DEFAULT) -> list[str]:
        """The keys starting with ``prefix`` (all keys for ""), sorted."""
        reply = await self._timed_request("keys", timeout, prefix=check_key(prefix))
        keys: list[str] = reply["keys"]
        return keys

    async def get_prefix(
        self, prefix: str = "", *, timeout: Timeout = CLIENT_DEFAULT
    ) -> dict[str, JsonValue]:
        """The keys starting with ``prefix`` with their values, read at one revision."""
        reply = await self._timed_request("keys", timeout, prefix=check_key(prefix), values=True)
        values: dict[str, JsonValue] = reply["values"]
        return values

    async def set(
        self,
        key: str,
        value: JsonValue,
        *,
        if_revision: int | None = None,
        if_absent: bool = False,
        ttl: float | None = None,
        ephemeral: bool = False,
        timeout: Timeout = CLIENT_DEFAULT,
    ) -> int:
        """Set ``key`` to ``value``; returns the revision of the change.

        ``ttl``: seconds until the server removes the key (a removal every subscriber
        sees, with its own revision); without it the key no longer expires.
        ``ephemeral=True``: the server removes the key when this client's session ends,
        however it ends (a later write without it, by anyone, unbinds the key).

        Compare-and-set: ``if_revision=N`` applies only if the key's last change is still
        revision N (``entry(key).mod_revision``), ``if_absent=True`` only if the key does
        not exist; else ``ConflictError`` (naming the key's revision now) and nothing
        changes. ``ResourceLockedError`` if another client leases ``key``; ``TypeError``
        naming the path for a value that is not JSON-like (a tuple, a set, an object...).
        """
        expect = expectation(key, if_revision, if_absent)
        ttls = None if ttl is None else {key: ttl}
        bound = [key] if ephemeral else None
        return await self.update(
            updates={key: value}, expect=expect, ttl=ttls, ephemeral=bound, timeout=timeout
        )

    async def remove(
        self,
        key: str,
        *,
        if_revision: int | None = None,
        missing_ok: bool = True,
        timeout: Timeout = CLIENT_DEFAULT,
    ) -> int:
        """Remove ``key``; returns the revision of the change. ``if_revision``: only if the
        key's last change is still that revision (``ConflictError`` otherwise).

        ``missing_ok=False``: ``KeyError`` ("no key 'k'") if there was no such key to
        remove, as redis's DEL answers 0. The removal is then a compare-and-set on the
        revision read just before (retried if the key changes in between), so the answer
        is exact on every server and store: the ``KeyError`` comes when the key was absent
        at the moment of the removal, never when this call removed a value.
        """
        if missing_ok:
            return await self.update(
                removals=[key], expect=expectation(key, if_revision, False), timeout=timeout
            )
        for _ in range(REMOVE_ATTEMPTS):
            expected = if_revision
            if expected is None:
                entry = await self.entry(key, timeout=timeout)
                if entry is None:
                    raise KeyError(f"no key {key!r}")
                expected = entry.mod_revision
            try:
                return await self.update(removals=[key], expect={key: expected}, timeout=timeout)
            except ConflictError as error:
                if key in error.current and error.current[key] is None:
                    raise KeyError(f"no key {key!r}") from None
                if if_revision is not None:
                    raise
        raise ConflictError(
            f"key {key!r} changed between reading and removing it {REMOVE_ATTEMPTS} times "
            "in a row: not removed"
        )

    async def update(
        self,
        updates: Mapping[str, JsonValue] | None = None,
        removals: Iterable[str] | None = None,
        *,
        expect: Mapping[str, int | None] | None = None,
        ttl: Mapping[str, float] | None = None,
        ephemeral: Iterable[str] | None = None,
        timeout: Timeout = CLIENT_DEFAULT,
    ) -> int:
        """Apply all of ``updates`` and ``removals`` atomically, or none of them.

        ``ephemeral``: keys of ``updates`` the server removes when this session ends.

        ``ttl``: per key of ``updates``, seconds until the server removes it (a finite
        number > 0, else ``ValueError`` naming the key); a key set without one no longer
        expires.

        ``expect`` (compare-and-set): per key the update touches, the revision of its last
        change it must still have, or None: it must not exist. If any does not hold,
        ``ConflictError`` names each such key with its revision now, and nothing changes.
        Returns the revision; ``ResourceLockedError`` if another client leases a key.
        """
        conn = await self._connection()
        arguments = update_arguments(
            updates, removals, expect, ttl, ephemeral, conn.max_message_bytes
        )
        refuse_taken_leases(arguments, self._leases_taken)
        reply = await self._timed_request("update", timeout, **arguments)
        revision: int = reply["revision"]
        return revision

    def subscribe(self, interval: float = 0, prefix: str = "") -> ChangeStream:
        """``async for change in client.subscribe(interval=1/30, prefix="avatar.")``.

        At most one change per ``interval`` seconds, coalesced: each key's latest value.
        """
        return ChangeStream(self, check_interval(interval), check_key(prefix))

    # -- NanoVer's calls -----------------------------------------------------------

    async def subscribe_all_state_updates(
        self, interval: float = 0, *, timeout: Timeout = CLIENT_DEFAULT
    ) -> None:
        """Keep a local mirror of the whole state, refreshed at most every ``interval`` s.

        Returns once the mirror holds the first snapshot. Read it with ``copy_state()``
        or ``lock_state()``. Calling it again while subscribed does nothing.
        """
        if self._mirror.started:
            return
        interval = check_interval(interval)
        seconds = self._seconds(timeout)
        await self._mirror.start(await self._connection(), float(interval), seconds)

    def copy_state(self) -> dict[str, JsonValue]:
        """A deep copy of the mirror (empty unless ``subscribe_all_state_updates`` ran)."""
        return self._mirror.copy()

    def lock_state(self) -> AbstractContextManager[Mapping[str, JsonValue]]:
        """Hold the mirror still while the block reads it (a read-only view).

        Batches arriving meanwhile are applied when the block ends.
        """
        return self._mirror.hold()

    async def attempt_update_state(
        self, change: DictionaryChange, *, timeout: Timeout = CLIENT_DEFAULT
    ) -> bool:
        """Apply ``change`` atomically; False (nothing applied) if a key is leased by another."""
        try:
            await self.update(change.updates, change.removals, timeout=timeout)
        except ResourceLockedError:
            return False
        return True

    async def attempt_update_locks(
        self, lock_updates: Mapping[str, float | None], *, timeout: Timeout = CLIENT_DEFAULT
    ) -> bool:
        """Lease keys (``{key: seconds}``) and release them (``{key: None}``).

        Releases always happen; the acquisitions happen all together or not at all
        (False if another client leases one of them).
        """
        acquire = {check_key(k): s for k, s in lock_updates.items() if s is not None}
        release = [check_key(k) for k, s in lock_updates.items() if s is None]
        started = time.monotonic()
        try:
            await self._timed_request("leases", timeout, acquire=acquire, release=release)
        except ResourceLockedError:
            for key in release:
                self._leases.pop(key, None)
            return False
        for key in release:
            self._leases.pop(key, None)
            self._leases_taken.pop(key, None)
        for key, seconds in acquire.items():
            self._leases[key] = started + seconds
            self._leases_taken.pop(key, None)
        return True

    async def leases(self, *, timeout: Timeout = CLIENT_DEFAULT) -> list[LeaseInfo]:
        """The live leases on the server, sorted by key."""
        reply = await self._timed_request("list_leases", timeout)
        return [LeaseInfo(key, mine, left) for key, mine, left in reply["leases"]]

    async def list_leases(self) -> list[tuple[str, bool, float | None]]:
        """Deprecated: ``leases()``, as ``(key, mine, seconds_left or None)`` tuples."""
        warn_renamed("AsyncClient.list_leases()", "AsyncClient.leases()")
        return [(lease.key, lease.mine, lease.seconds_left) for lease in await self.leases()]

    async def locks(self, *, timeout: Timeout = CLIENT_DEFAULT) -> list[LockInfo]:
        """The read/write locks held on the server, sorted by key."""
        reply = await self._timed_request("list_locks", timeout)
        return [lock_from_wire(wire) for wire in reply["locks"]]

    async def force_release(
        self, kind: str, key: str, *, timeout: Timeout = CLIENT_DEFAULT
    ) -> list[ReleasedHold]:
        """Take the ``kind`` ("lock" or "lease") on ``key`` away from whoever holds it.

        Needs the admin right ``force_unlock``. Each holder that is a session of the server
        is told (its client sees the hold lost); the reply lists the holders released, with
        ``told``. ``KeyError`` if nothing is held there.
        """
        reply = await self._timed_request("force_release", timeout, kind=kind, key=check_key(key))
        return released_from_wire(reply)

    async def sessions(self, *, timeout: Timeout = CLIENT_DEFAULT) -> list[SessionInfo]:
        """The sessions connected to the server (``you`` marks this client's)."""
        reply = await self._timed_request("list_sessions", timeout)
        return [session_from_wire(wire) for wire in reply["sessions"]]

    async def run_command(self, name: str, **arguments: JsonValue) -> dict[str, JsonValue] | None:
        """Run the command ``name`` on the server with ``arguments``; returns its result.

        ``KeyError`` if there is no such command, ``TypeError`` for arguments it does not
        take, ``CommandFailedError`` if it raised. It waits the client's ``timeout``: its
        keyword arguments are the command's, so it takes no ``timeout=`` of its own.
        """
        checked = checked_copy(arguments, f"{name} arguments")
        reply = await self._timed_request("call", CLIENT_DEFAULT, name=name, arguments=checked)
        result: dict[str, JsonValue] | None = reply.get("result")
        return result

    async def available_commands(
        self, *, timeout: Timeout = CLIENT_DEFAULT
    ) -> dict[str, dict[str, JsonValue]]:
        """The commands registered on the server: ``{name: default_arguments}``."""
        reply = await self._timed_request("commands", timeout)
        commands: dict[str, dict[str, JsonValue]] = reply["commands"]
        return commands

    # -- read/write locks (the momotor seed's StateABC) ----------------------------

    @asynccontextmanager
    async def get_lock(
        self, key: str, *, exclusive: bool = True, timeout: float | None = None
    ) -> AsyncIterator[None]:
        """Hold the read/write lock on ``key`` for the ``async with`` block.

        The owner is the current asyncio task: two tasks exclude each other. Raises
        ``LockFailedError`` if ``timeout`` s pass, the server refuses, or the connection is
        lost (also when the block ends, if the lock was lost while it ran).
        """
        held = await self.acquire_lock(key, self._task_owner(), exclusive, timeout)
        try:
            yield
        finally:
            await self.release_lock(held)

    async def test_lock(
        self, key: str, *, exclusive: bool = True, timeout: Timeout = CLIENT_DEFAULT
    ) -> bool:
        """True if the lock could be taken in that mode right now (transient information)."""
        reply = await self._timed_request(
            "test_lock", timeout, key=check_key(key), exclusive=exclusive
        )
        free: bool = reply["free"]
        return free

    def _task_owner(self) -> str:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("get_lock must be used inside an asyncio task")
        owner = self._task_owners.get(task)
        if owner is None:
            owner = f"{self._owner_prefix}-task-{next(self._owner_numbers)}"
            self._task_owners[task] = owner
        return owner

    def new_owner(self, kind: str) -> str:
        """A fresh lock owner name (the sync client uses one per thread)."""
        return f"{self._owner_prefix}-{kind}-{next(self._owner_numbers)}"

    async def acquire_lock(
        self, key: str, owner: str, exclusive: bool = True, timeout: float | None = None
    ) -> HeldLock:
        """Take the lock on ``key`` for ``owner``; see ``get_lock``."""
        check_key(key)
        checked_lock_wait(timeout)
        conn = await self._connection()
        arguments = {"key": key, "exclusive": exclusive, "timeout": timeout, "owner": owner}
        try:
            future = conn.send("lock", arguments)
        except ConnectionLostError as error:
            raise LockFailedError(f"cannot lock {key!r}: {error}") from error
        generation = conn.generation
        deadline = lock_deadline(timeout, self.timeout)
        try:
            async with asyncio.timeout(deadline):
                reply = await asyncio.shield(future)
        except TimeoutError:
            self._withdraw_lock_request(conn, future, key, exclusive, owner)
            raise timed_out(f"lock {key!r}", conn.target, deadline or 0.0) from None
        except asyncio.CancelledError:
            self._withdraw_lock_request(conn, future, key, exclusive, owner)
            raise
        except ConnectionLostError as error:
            raise LockFailedError(f"cannot lock {key!r}: {error}") from error
        fence = reply.get("fence")
        held = HeldLock(
            key, owner, exclusive, generation, fence=fence if type(fence) is int else None
        )
        if conn.generation != generation or not conn.connected:
            held.lost = True
        self._held_locks.add(held)
        return held

    @staticmethod
    def _withdraw_lock_request(
        conn: Connection, future: asyncio.Future[Message], key: str, exclusive: bool, owner: str
    ) -> None:
        """Leave the server's queue (a waiting writer would hold off new readers); if the
        grant crossed the cancel on the wire, give the lock back once it lands."""
        conn.cancel(future)

        def give_back(granted: asyncio.Future[Message]) -> None:
            if not granted.cancelled() and granted.exception() is None:
                conn.send_and_forget("unlock", {"key": key, "exclusive": exclusive, "owner": owner})

        future.add_done_callback(give_back)

    async def release_lock(self, held: HeldLock) -> None:
        """Give back a hold; ``LockFailedError`` if it was lost with the connection meanwhile
        (``LockLostError`` if the server took it away)."""
        conn = self._conn
        if conn is None or conn.generation != held.generation:
            held.lost = True
        lost = lock_lost_error(held)
        if lost is not None:
            self._held_locks.discard(held)
            raise lost
        mode = "exclusive" if held.exclusive else "shared"
        try:
            await self._timed_request(
                "unlock", CLIENT_DEFAULT, key=held.key, exclusive=held.exclusive, owner=held.owner
            )
        except LockNotOwnedError:
            # The server's "lost" message travels ahead of this reply: taken away meanwhile.
            lost = lock_lost_error(held)
            if lost is None:
                raise
            raise lost from None
        except ConnectionLostError as error:
            raise LockFailedError(
                f"the {mode} lock on {held.key!r} was lost while held: {error}"
            ) from error
        finally:
            # Still listed while the unlock is in flight, so that a "lost" message read
            # ahead of its reply marks it.
            self._held_locks.discard(held)
