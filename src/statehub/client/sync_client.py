"""Client: the same calls as ``AsyncClient``, blocking, for code without an event loop.

It owns an ``AsyncClient`` and an event loop running in one background thread; each call
is submitted to that loop and waited for, so both clients share everything but this edge.
Read/write locks taken through it belong to the calling thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, overload

from statehub.client.async_client import AsyncClient, ChangeStream
from statehub.client.changes import StateChange
from statehub.client.deprecation import warn_renamed
from statehub.client.listing import LeaseInfo, LockInfo, SessionInfo
from statehub.client.tls import ClientTls
from statehub.core.change import DictionaryChange
from statehub.core.entries import Entry
from statehub.core.events import Event
from statehub.core.key_history import KeyVersion
from statehub.core.values import JsonValue
from statehub.endpoints.remote import EndpointCalls

T = TypeVar("T")


class Client(EndpointCalls):
    """A blocking statehub client; connects on construction (``ConnectionLostError`` if it can't).

    ``with Client(address, port) as client: client.set("a", 1)``. Every blocking client
    of a process runs in one background thread (an event loop that lives as long as the
    process). Event callbacks (``connection_lost``, ``reconnected``, ``leases_lost``,
    ``locks_lost``) run in that thread and must not block.
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
        connect_timeout: float = 5.0,
        reconnect: bool = True,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
    ) -> None:
        self._loop = _background_loop()
        self._owners = threading.local()
        self._closed = False
        self.aio = AsyncClient(
            address,
            port,
            token=token,
            credential=credential,
            tls=tls,
            name=name,
            connect_timeout=connect_timeout,
            reconnect=reconnect,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        try:
            self._run(self.aio.connect())
        except BaseException:
            self._closed = True
            with contextlib.suppress(Exception):
                self._run(self.aio.close())
            raise

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if _running_loop() is self._loop:
            coroutine.close()
            raise RuntimeError(
                "a blocking Client call from the clients' own thread (an event callback) "
                "would wait for itself: hand the work to another thread"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C while waiting: don't leave the call running
            raise

    def _call_soon(self, function: Any, *args: Any) -> None:
        self._loop.call_soon_threadsafe(function, *args)

    # -- connection ----------------------------------------------------------------

    @property
    def address(self) -> str:
        """The server's host."""
        return self.aio.address

    @property
    def port(self) -> int:
        """The server's port."""
        return self.aio.port

    @property
    def connected(self) -> bool:
        """True while a session with the server is open."""
        return self.aio.connected

    @property
    def token(self) -> str | None:
        """The access token the leases of this session are held under."""
        return self.aio.token

    @property
    def connection_lost(self) -> Event:
        """Fired with ``reason=`` when the session drops (callbacks run in the client's thread)."""
        return self.aio.connection_lost

    @property
    def reconnected(self) -> Event:
        """Fired when a new session is open and subscriptions have resumed."""
        return self.aio.reconnected

    @property
    def leases_lost(self) -> Event:
        """Fired with ``keys=`` naming the leases a lost session took with it."""
        return self.aio.leases_lost

    @property
    def locks_lost(self) -> Event:
        """Fired with ``keys=`` naming the read/write locks a lost session took with it."""
        return self.aio.locks_lost

    def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until (re)connected; ``ConnectionLostError`` if ``timeout`` s pass first."""
        self._run(self.aio.wait_connected(timeout))

    def close(self) -> None:
        """End the session and stop the background thread."""
        if self._closed:
            return
        self._closed = True
        self._run(self.aio.close())

    def __enter__(self) -> Client:
        """The client itself (already connected); ``close()`` when the block ends."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the client."""
        self.close()

    # -- Pythonic state calls ------------------------------------------------------

    @overload
    def get(self, key: str) -> JsonValue: ...
    @overload
    def get(self, key: str, default: T) -> JsonValue | T: ...

    def get(self, key: str, default: object = None) -> object:
        """The value at ``key`` on the server, or ``default`` (None) if there is no such key."""
        return self._run(self.aio.get(key, default))

    def entry(self, key: str) -> Entry | None:
        """``key``'s value with its facts, or None (see AsyncClient.entry)."""
        return self._run(self.aio.entry(key))

    def entries(self, prefix: str = "") -> list[Entry]:
        """The keys starting with ``prefix`` with values and facts, read at one revision."""
        return self._run(self.aio.entries(prefix))

    def get_all(self) -> dict[str, JsonValue]:
        """The whole state, read from the server."""
        return self._run(self.aio.get_all())

    def get_many(self, keys: Iterable[str]) -> dict[str, JsonValue]:
        """The values of ``keys`` read at one revision; keys that do not exist are left out."""
        return self._run(self.aio.get_many(keys))

    def keys(self, prefix: str = "") -> list[str]:
        """The keys starting with ``prefix`` (all keys for ""), sorted."""
        return self._run(self.aio.keys(prefix))

    def get_prefix(self, prefix: str = "") -> dict[str, JsonValue]:
        """The keys starting with ``prefix`` with their values, read at one revision."""
        return self._run(self.aio.get_prefix(prefix))

    def set(
        self,
        key: str,
        value: JsonValue,
        *,
        if_revision: int | None = None,
        if_absent: bool = False,
        ttl: float | None = None,
        ephemeral: bool = False,
    ) -> int:
        """Set ``key`` to ``value``; returns the revision of the change. ``if_revision`` /
        ``if_absent``: compare-and-set, ``ConflictError`` if it fails; ``ttl``: seconds
        until the server removes the key; ``ephemeral``: removed when this client's
        session ends (see AsyncClient.set)."""
        return self._run(
            self.aio.set(
                key,
                value,
                if_revision=if_revision,
                if_absent=if_absent,
                ttl=ttl,
                ephemeral=ephemeral,
            )
        )

    def remove(self, key: str, *, if_revision: int | None = None, missing_ok: bool = True) -> int:
        """Remove ``key``; returns the revision of the change (``if_revision``: see set).
        ``missing_ok=False``: ``KeyError`` if there was no such key (see AsyncClient)."""
        return self._run(self.aio.remove(key, if_revision=if_revision, missing_ok=missing_ok))

    def update(
        self,
        updates: Mapping[str, JsonValue] | None = None,
        removals: Iterable[str] | None = None,
        *,
        expect: Mapping[str, int | None] | None = None,
        ttl: Mapping[str, float] | None = None,
        ephemeral: Iterable[str] | None = None,
    ) -> int:
        """Apply all of ``updates`` and ``removals`` atomically, or none; returns the revision.

        ``expect``: per key, the revision of its last change it must still have, or None
        (absent); ``ConflictError`` and nothing applied if one does not hold.
        ``ResourceLockedError`` if another client leases one of the keys. ``ttl``: per
        updated key, seconds until the server removes it. ``ephemeral``: keys removed
        when this client's session ends.
        """
        return self._run(
            self.aio.update(updates, removals, expect=expect, ttl=ttl, ephemeral=ephemeral)
        )

    def history(
        self, key: str, *, limit: int | None = None, since: int | None = None
    ) -> list[KeyVersion]:
        """``key``'s last versions kept by the server, oldest first (see
        AsyncClient.history)."""
        return self._run(self.aio.history(key, limit=limit, since=since))

    def subscribe(self, interval: float = 0, prefix: str = "") -> Iterator[StateChange]:
        """Yield coalesced changes (first a snapshot) until the generator is closed."""
        stream = self.aio.subscribe(interval, prefix)
        return self._iterate(stream)

    def _iterate(self, stream: ChangeStream) -> Iterator[StateChange]:
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._call_soon(stream.close)

    # -- NanoVer's calls -----------------------------------------------------------

    def subscribe_all_state_updates(self, interval: float = 0) -> None:
        """Keep a local mirror of the whole state (see AsyncClient); returns once it is filled."""
        self._run(self.aio.subscribe_all_state_updates(interval))

    def copy_state(self) -> dict[str, JsonValue]:
        """A deep copy of the mirror (empty unless ``subscribe_all_state_updates`` ran)."""
        return self.aio.copy_state()

    @contextmanager
    def lock_state(self) -> Iterator[Mapping[str, JsonValue]]:
        """Hold the mirror still while the block reads it (a read-only view)."""
        with self.aio.lock_state() as state:
            yield state

    def attempt_update_state(self, change: DictionaryChange) -> bool:
        """Apply ``change`` atomically; False (nothing applied) if a key is leased by another."""
        return self._run(self.aio.attempt_update_state(change))

    def attempt_update_locks(self, lock_updates: Mapping[str, float | None]) -> bool:
        """Lease keys (``{key: seconds}``), release them (``{key: None}``); see AsyncClient."""
        return self._run(self.aio.attempt_update_locks(lock_updates))

    def list_leases(self) -> list[tuple[str, bool, float | None]]:
        """Deprecated: ``leases()``, as ``(key, mine, seconds_left or None)`` tuples."""
        warn_renamed("Client.list_leases()", "Client.leases()")
        return [(lease.key, lease.mine, lease.seconds_left) for lease in self.leases()]

    def leases(self) -> list[LeaseInfo]:
        """The live leases on the server, sorted by key."""
        return self._run(self.aio.leases())

    def locks(self) -> list[LockInfo]:
        """The read/write locks held on the server, sorted by key."""
        return self._run(self.aio.locks())

    def sessions(self) -> list[SessionInfo]:
        """The sessions connected to the server (``you`` marks this client's)."""
        return self._run(self.aio.sessions())

    def run_command(self, name: str, **arguments: JsonValue) -> dict[str, JsonValue] | None:
        """Run the command ``name`` on the server with ``arguments``; returns its result."""
        return self._run(self.aio.run_command(name, **arguments))

    @property
    def available_commands(self) -> dict[str, dict[str, JsonValue]]:
        """The commands on the server (a property, as in NanoVer's client)."""
        return self._run(self.aio.available_commands())

    # -- read/write locks ----------------------------------------------------------

    @contextmanager
    def get_lock(
        self, key: str, *, exclusive: bool = True, timeout: float | None = None
    ) -> Iterator[None]:
        """Hold the read/write lock on ``key`` for the ``with`` block (owner: this thread)."""
        held = self._run(self.aio.acquire_lock(key, self._thread_owner(), exclusive, timeout))
        try:
            yield
        finally:
            self._run(self.aio.release_lock(held))

    def test_lock(self, key: str, *, exclusive: bool = True) -> bool:
        """True if the lock could be taken in that mode right now (transient information)."""
        return self._run(self.aio.test_lock(key, exclusive=exclusive))

    def _thread_owner(self) -> str:
        owner: str | None = getattr(self._owners, "name", None)
        if owner is None:
            owner = self.aio.new_owner("thread")
            self._owners.name = owner
        return owner


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_loop_guard = threading.Lock()
_loop_and_pid: tuple[asyncio.AbstractEventLoop, int] | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    """The event loop every blocking ``Client`` of this process runs in (one daemon thread).

    It lives as long as the process and is never closed. grpc hands a call's last events
    (its status, a cancelled read) to the loop the call was made in; a client closing a
    loop of its own could not know when the last one had arrived, and one arriving after
    made asyncio print "Task was destroyed but it is pending!" or grpc print "Event loop
    is closed" from another loop of the process.
    """
    global _loop_and_pid
    with _loop_guard:
        if _loop_and_pid is None or _loop_and_pid[1] != os.getpid():  # new, or forked
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="statehub-client", daemon=True)
            thread.start()
            _loop_and_pid = (loop, os.getpid())
        return _loop_and_pid[0]
