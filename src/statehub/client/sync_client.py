"""Client: the same calls as ``AsyncClient``, blocking, for code without an event loop.

Over plain TCP (``statehub+tcp://``) it does its own socket I/O in the calling thread
(``socket_session``), as redis-py does; over gRPC and WebSocket, whose libraries are
asyncio ones, it runs a ``Connection`` in a background event loop (``loop_session``).
The requests and replies are shared with ``AsyncClient`` (``call_shapes``): only the I/O
differs, as between httpx's two clients. Read/write locks taken through it belong to
the calling thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import types
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, overload

from statehub.client.address import resolve_target
from statehub.client.call_shapes import (
    REMOVE_ATTEMPTS,
    HeldLock,
    apply_batch,
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
from statehub.client.changes import BlockingCoalescingBuffer, HoldsLost, StateChange
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
from statehub.client.socket_session import LateReplyHook
from statehub.client.subscription import BatchHandler, Message, Subscription
from statehub.client.timeouts import (
    CLIENT_DEFAULT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    Timeout,
    checked_timeout,
    timed_out,
)
from statehub.client.tls import ClientTls
from statehub.client.transports import is_tcp_url
from statehub.core.change import DictionaryChange
from statehub.core.entries import Entry
from statehub.core.events import Event
from statehub.core.key_history import KeyVersion
from statehub.core.pacing import check_interval
from statehub.core.values import JsonValue, check_key, checked_copy, copy_mapping
from statehub.endpoints.remote import EndpointCalls
from statehub.errors import (
    ConflictError,
    ConnectionLostError,
    LockFailedError,
    LockNotOwnedError,
    ResourceLockedError,
)
from statehub.errors import TimeoutError as CallTimeoutError

logger = logging.getLogger(__name__)
T = TypeVar("T")

_client_numbers = itertools.count(1)


class _Session(Protocol):
    """What ``Client`` needs of a session: ``SocketSession`` and ``LoopSession``."""

    target: str

    @property
    def generation(self) -> int: ...
    @property
    def session(self) -> str | None: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def token(self) -> str | None: ...
    @property
    def connected(self) -> bool: ...
    def is_connected(self) -> bool: ...
    def connect(self) -> None: ...
    def wait_connected(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...
    def call(
        self,
        op: str,
        arguments: Message,
        timeout: float | None,
        late: LateReplyHook | None = None,
    ) -> Message: ...
    def send_and_forget(self, op: str, arguments: Message) -> None: ...
    def subscribe(
        self,
        interval: float,
        prefix: str,
        handler: BatchHandler,
        timeout: float | None = None,
    ) -> Subscription: ...
    def unsubscribe(self, subscription: Subscription) -> None: ...


class Client(EndpointCalls):
    """A blocking statehub client; connects on construction (``ConnectionLostError`` if it can't).

    ``with Client(address, port) as client: client.set("a", 1)``. Safe to share between
    threads. ``timeout``: seconds a call waits for its answer (every call also takes
    ``timeout=``), else ``statehub.TimeoutError``. Event callbacks (``connection_lost``,
    ``reconnected``, ``leases_lost``, ``locks_lost``) run in the thread that noticed
    (a caller's, or the client's helper thread) and must not block.
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
        target = resolve_target(address, port)
        self.address = target.host
        self.port = target.port
        self.timeout = checked_timeout(timeout)
        connect_timeout = checked_timeout(connect_timeout, "connect_timeout") or 0.0
        self.name = name if name is not None else f"statehub-python-sync-{next(_client_numbers)}"
        if tls is True or (target.tls and tls is None):
            tls = ClientTls()
        tls = tls or None
        self._reconnect = reconnect
        self.connection_lost = Event()
        self.reconnected = Event()
        self.leases_lost = Event()
        self.locks_lost = Event()
        self._leases: dict[str, float] = {}
        #: Leases the server took away while the session lived on -> why; the next
        #: update touching one raises ``LeaseLostError`` (taking the lease again forgets it).
        self._leases_taken: dict[str, str] = {}
        self._held_locks: set[HeldLock] = set()
        self._owners = threading.local()
        self._owner_prefix = uuid.uuid4().hex[:12]
        self._owner_numbers = itertools.count(1)
        self._streams: weakref.WeakSet[_BlockingChangeStream] = weakref.WeakSet()
        self._mirror: dict[str, JsonValue] = {}
        self._mirror_lock = threading.Lock()
        self._mirror_backlog: list[Message] = []
        self._backlog_lock = threading.Lock()
        self._mirror_subscription: Subscription | None = None
        self._mirror_filled = threading.Event()
        self._mirror_ended: ConnectionLostError | None = None
        self._closed = False
        self._session: _Session
        session_settings: dict[str, Any] = {
            "token": token,
            "credential": credential,
            "client_name": self.name,
            "connect_timeout": connect_timeout,
            "reconnect": reconnect,
            "backoff_initial": backoff_initial,
            "backoff_max": backoff_max,
            "on_lost": self._on_lost,
            "on_restored": self._on_restored,
            "on_holds_lost": self._on_holds_lost,
        }
        if is_tcp_url(target.dial_address):
            from statehub.client.socket_session import SocketSession

            self._session = SocketSession(
                target.dial_address,
                tls=tls.ssl_context() if tls is not None else None,
                server_name=tls.server_name if tls is not None else None,
                **session_settings,
            )
        else:
            from statehub.client.loop_session import LoopSession

            self._session = LoopSession(
                target.dial_address, target.port, tls=tls, **session_settings
            )
        try:
            self._session.connect()
        except BaseException:
            self._closed = True
            self._session.close()
            raise

    def _timed_request(self, op: str, timeout: Timeout, /, **arguments: Any) -> Message:
        seconds = self.timeout if timeout is CLIENT_DEFAULT else checked_timeout(timeout)
        return self._session.call(op, arguments, seconds)

    # -- connection ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a session with the server is open."""
        return self._session.is_connected()

    @property
    def session(self) -> str | None:
        """The server's id of the current session."""
        return self._session.session

    @property
    def token(self) -> str | None:
        """The access token the leases of this session are held under."""
        return self._session.token

    def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until (re)connected; ``ConnectionLostError`` if ``timeout`` s pass first."""
        self._session.wait_connected(timeout)

    def close(self) -> None:
        """End the session; leases and locks held through it are released by the server."""
        if self._closed:
            return
        self._closed = True
        self._session.close()
        for stream in list(self._streams):
            stream.close()
        self._end_mirror_wait(ConnectionLostError("the client was closed"))

    def _end_mirror_wait(self, error: ConnectionLostError) -> None:
        if not self._mirror_filled.is_set():
            self._mirror_ended = error
            self._mirror_filled.set()

    def __enter__(self) -> Client:
        """The client itself (already connected); ``close()`` when the block ends."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the client."""
        self.close()

    def _on_lost(self, reason: str) -> None:
        now = time.monotonic()
        leases = sorted(key for key, deadline in self._leases.items() if deadline > now)
        self._leases.clear()
        locks = sorted({held.key for held in self._held_locks if not held.lost})
        for held in self._held_locks:
            held.lost = True
        if not self._reconnect:  # nothing will resume: end what waits for data
            error = ConnectionLostError(f"lost the connection to statehub: {reason}")
            for stream in list(self._streams):
                stream.fail(error)
            self._end_mirror_wait(error)
        invoke_event(self.connection_lost, reason=reason)
        self._tell_lost(leases, locks, f"the session ended: {reason}")

    def _on_holds_lost(self, lost: Message) -> None:
        """The server took leases and locks of this live session away: say so (see
        ``AsyncClient``)."""
        leases, locks = take_holds(lost, self._leases, self._leases_taken, self._held_locks)
        self._tell_lost(leases, locks, str(lost.get("reason") or "released by the server"))

    def _tell_lost(self, leases: list[str], locks: list[str], reason: str) -> None:
        tell_lost(self._streams, self.leases_lost, self.locks_lost, (leases, locks, reason))

    def _on_restored(self) -> None:
        invoke_event(self.reconnected)

    # -- Pythonic state calls ------------------------------------------------------

    @overload
    def get(self, key: str, *, timeout: Timeout = CLIENT_DEFAULT) -> JsonValue: ...
    @overload
    def get(self, key: str, default: T, *, timeout: Timeout = CLIENT_DEFAULT) -> JsonValue | T: ...

    def get(self, key: str, default: object = None, *, timeout: Timeout = CLIENT_DEFAULT) -> object:
        """The value at ``key`` on the server, or ``default`` (None) if there is no such key.

        ``timeout``: seconds to wait for the answer (the client's ``timeout`` unless
        given; None: no limit), else ``statehub.TimeoutError``; every call takes it.
        """
        values: dict[str, JsonValue] = self._timed_request("get", timeout, keys=[check_key(key)])[
            "values"
        ]
        return values.get(key, default)

    def entry(self, key: str, *, timeout: Timeout = CLIENT_DEFAULT) -> Entry | None:
        """``key``'s value with its facts, or None (see AsyncClient.entry)."""
        reply = self._timed_request("get", timeout, keys=[check_key(key)], facts=True)
        values: dict[str, JsonValue] = reply["values"]
        if key not in values:
            return None
        return entry_from_wire(key, values[key], reply["facts"][key])

    def entries(self, prefix: str = "", *, timeout: Timeout = CLIENT_DEFAULT) -> list[Entry]:
        """The keys starting with ``prefix`` with values and facts, read at one revision."""
        reply = self._timed_request(
            "keys", timeout, prefix=check_key(prefix), values=True, facts=True
        )
        facts = reply["facts"]
        return [entry_from_wire(key, value, facts[key]) for key, value in reply["values"].items()]

    def get_all(self, *, timeout: Timeout = CLIENT_DEFAULT) -> dict[str, JsonValue]:
        """The whole state, read from the server."""
        values: dict[str, JsonValue] = self._timed_request("get", timeout, keys=None)["values"]
        return values

    def get_many(
        self, keys: Iterable[str], *, timeout: Timeout = CLIENT_DEFAULT
    ) -> dict[str, JsonValue]:
        """The values of ``keys`` read at one revision; keys that do not exist are left out."""
        reply = self._timed_request("get", timeout, keys=[check_key(key) for key in keys])
        values: dict[str, JsonValue] = reply["values"]
        return values

    def keys(self, prefix: str = "", *, timeout: Timeout = CLIENT_DEFAULT) -> list[str]:
        """The keys starting with ``prefix`` (all keys for ""), sorted."""
        keys: list[str] = self._timed_request("keys", timeout, prefix=check_key(prefix))["keys"]
        return keys

    def get_prefix(
        self, prefix: str = "", *, timeout: Timeout = CLIENT_DEFAULT
    ) -> dict[str, JsonValue]:
        """The keys starting with ``prefix`` with their values, read at one revision."""
        reply = self._timed_request("keys", timeout, prefix=check_key(prefix), values=True)
        values: dict[str, JsonValue] = reply["values"]
        return values

    def set(
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
        """Set ``key`` to ``value``; returns the revision of the change. ``if_revision`` /
        ``if_absent``: compare-and-set, ``ConflictError`` if it fails; ``ttl``: seconds
        until the server removes the key; ``ephemeral``: removed when this client's
        session ends (see AsyncClient.set)."""
        return self.update(
            {key: value},
            expect=expectation(key, if_revision, if_absent),
            ttl=None if ttl is None else {key: ttl},
            ephemeral=[key] if ephemeral else None,
            timeout=timeout,
        )

    def remove(
        self,
        key: str,
        *,
        if_revision: int | None = None,
        missing_ok: bool = True,
        timeout: Timeout = CLIENT_DEFAULT,
    ) -> int:
        """Remove ``key``; returns the revision of the change (``if_revision``: see set).
        ``missing_ok=False``: ``KeyError`` if there was no such key (see AsyncClient)."""
        if missing_ok:
            expect = expectation(key, if_revision, False)
            return self.update(removals=[key], expect=expect, timeout=timeout)
        for _ in range(REMOVE_ATTEMPTS):
            expected = if_revision
            if expected is None:
                entry = self.entry(key, timeout=timeout)
                if entry is None:
                    raise KeyError(f"no key {key!r}")
                expected = entry.mod_revision
            try:
                return self.update(removals=[key], expect={key: expected}, timeout=timeout)
            except ConflictError as error:
                if key in error.current and error.current[key] is None:
                    raise KeyError(f"no key {key!r}") from None
                if if_revision is not None:
                    raise
        raise ConflictError(
            f"key {key!r} changed between reading and removing it {REMOVE_ATTEMPTS} times "
            "in a row: not removed"
        )

    def update(
        self,
        updates: Mapping[str, JsonValue] | None = None,
        removals: Iterable[str] | None = None,
        *,
        expect: Mapping[str, int | None] | None = None,
        ttl: Mapping[str, float] | None = None,
        ephemeral: Iterable[str] | None = None,
        timeout: Timeout = CLIENT_DEFAULT,
    ) -> int:
        """Apply all of ``updates`` and ``removals`` atomically, or none; returns the revision.

        ``expect``: per key, the revision of its last change it must still have, or None
        (absent); ``ConflictError`` and nothing applied if one does not hold.
        ``ResourceLockedError`` if another client leases one of the keys. ``ttl``: per
        updated key, seconds until the server removes it. ``ephemeral``: keys removed
        when this client's session ends.
        """
        arguments = update_arguments(
            updates, removals, expect, ttl, ephemeral, self._session.max_message_bytes
        )
        refuse_taken_leases(arguments, self._leases_taken)
        revision: int = self._timed_request("update", timeout, **arguments)["revision"]
        return revision

    def history(
        self,
        key: str,
        *,
        limit: int | None = None,
        since: int | None = None,
        timeout: Timeout = CLIENT_DEFAULT,
    ) -> list[KeyVersion]:
        """``key``'s last versions kept by the server, oldest first (see
        AsyncClient.history)."""
        reply = self._timed_request("history", timeout, **history_arguments(key, limit, since))
        return key_versions(key, reply)

    def subscribe(self, interval: float = 0, prefix: str = "") -> Iterator[StateChange]:
        """Yield coalesced changes (first a snapshot) until the generator is closed."""
        stream = _BlockingChangeStream(self, check_interval(interval), check_key(prefix))
        return stream.changes()

    # -- NanoVer's calls -----------------------------------------------------------

    def subscribe_all_state_updates(
        self, interval: float = 0, *, timeout: Timeout = CLIENT_DEFAULT
    ) -> None:
        """Keep a local mirror of the whole state; returns once it is filled."""
        if self._mirror_subscription is not None:
            return
        interval = check_interval(interval)
        seconds = self.timeout if timeout is CLIENT_DEFAULT else checked_timeout(timeout)
        self._mirror_subscription = self._session.subscribe(
            float(interval), "", self._apply_to_mirror, timeout=seconds
        )
        self._mirror_filled.wait()  # set by the first batch, or by the end of the client
        if self._mirror_ended is not None:
            raise self._mirror_ended

    def copy_state(self) -> dict[str, JsonValue]:
        """A deep copy of the mirror (empty unless ``subscribe_all_state_updates`` ran)."""
        with self._mirror_lock:
            return copy_mapping(self._mirror)

    @contextmanager
    def lock_state(self) -> Iterator[Mapping[str, JsonValue]]:
        """Hold the mirror still while the block reads it (a read-only view); batches
        arriving meanwhile are applied when the block ends."""
        with self._mirror_lock:
            yield types.MappingProxyType(self._mirror)
        self._drain_mirror_backlog()

    def _apply_to_mirror(self, message: Message) -> None:
        with self._backlog_lock:
            self._mirror_backlog.append(message)
        self._drain_mirror_backlog()
        self._mirror_filled.set()

    def _drain_mirror_backlog(self) -> None:
        # Never wait for lock_state's block: the reading thread may be the one in it.
        if not self._mirror_lock.acquire(blocking=False):
            return
        try:
            with self._backlog_lock:
                backlog, self._mirror_backlog = self._mirror_backlog, []
            for pending in backlog:
                apply_batch(self._mirror, pending)
        finally:
            self._mirror_lock.release()

    def attempt_update_state(
        self, change: DictionaryChange, *, timeout: Timeout = CLIENT_DEFAULT
    ) -> bool:
        """Apply ``change`` atomically; False (nothing applied) if a key is leased by another."""
        try:
            self.update(change.updates, change.removals, timeout=timeout)
        except ResourceLockedError:
            return False
        return True

    def attempt_update_locks(
        self, lock_updates: Mapping[str, float | None], *, timeout: Timeout = CLIENT_DEFAULT
    ) -> bool:
        """Lease keys (``{key: seconds}``), release them (``{key: None}``); see AsyncClient."""
        acquire = {check_key(k): s for k, s in lock_updates.items() if s is not None}
        release = [check_key(k) for k, s in lock_updates.items() if s is None]
        started = time.monotonic()
        try:
            self._timed_request("leases", timeout, acquire=acquire, release=release)
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

    def leases(self, *, timeout: Timeout = CLIENT_DEFAULT) -> list[LeaseInfo]:
        """The live leases on the server, sorted by key."""
        reply = self._timed_request("list_leases", timeout)
        return [LeaseInfo(key, mine, left) for key, mine, left in reply["leases"]]

    def list_leases(self) -> list[tuple[str, bool, float | None]]:
        """Deprecated: ``leases()``, as ``(key, mine, seconds_left or None)`` tuples."""
        warn_renamed("Client.list_leases()", "Client.leases()")
        return [(lease.key, lease.mine, lease.seconds_left) for lease in self.leases()]

    def locks(self, *, timeout: Timeout = CLIENT_DEFAULT) -> list[LockInfo]:
        """The read/write locks held on the server, sorted by key."""
        return [
            lock_from_wire(wire) for wire in self._timed_request("list_locks", timeout)["locks"]
        ]

    def force_release(
        self, kind: str, key: str, *, timeout: Timeout = CLIENT_DEFAULT
    ) -> list[ReleasedHold]:
        """Take the ``kind`` ("lock" or "lease") on ``key`` away from whoever holds it (see
        ``AsyncClient.force_release``; admin right ``force_unlock``)."""
        reply = self._timed_request("force_release", timeout, kind=kind, key=check_key(key))
        return released_from_wire(reply)

    def sessions(self, *, timeout: Timeout = CLIENT_DEFAULT) -> list[SessionInfo]:
        """The sessions connected to the server (``you`` marks this client's)."""
        reply = self._timed_request("list_sessions", timeout)
        return [session_from_wire(wire) for wire in reply["sessions"]]

    def run_command(self, name: str, **arguments: JsonValue) -> dict[str, JsonValue] | None:
        """Run the command ``name`` on the server with ``arguments``; returns its result
        (waits the client's ``timeout``: the keyword arguments are the command's)."""
        checked = checked_copy(arguments, f"{name} arguments")
        result: dict[str, JsonValue] | None = self._timed_request(
            "call", CLIENT_DEFAULT, name=name, arguments=checked
        ).get("result")
        return result

    @property
    def available_commands(self) -> dict[str, dict[str, JsonValue]]:
        """The commands on the server (a property, as in NanoVer's client)."""
        commands: dict[str, dict[str, JsonValue]] = self._timed_request("commands", CLIENT_DEFAULT)[
            "commands"
        ]
        return commands

    # -- read/write locks ----------------------------------------------------------

    @contextmanager
    def get_lock(
        self, key: str, *, exclusive: bool = True, timeout: float | None = None
    ) -> Iterator[None]:
        """Hold the read/write lock on ``key`` for the ``with`` block (owner: this thread).

        ``timeout``: seconds to wait for the lock (``LockFailedError`` after); the call waits
        the client's ``timeout`` on top for a server that does not answer at all.
        """
        held = self._acquire_lock(check_key(key), exclusive, checked_lock_wait(timeout))
        try:
            yield
        finally:
            self._release_lock(held)

    def _acquire_lock(self, key: str, exclusive: bool, wait: float | None) -> HeldLock:
        owner = self._thread_owner()
        session = self._session
        arguments = {"key": key, "exclusive": exclusive, "timeout": wait, "owner": owner}

        def give_back(granted: Message | None) -> None:
            if granted is not None:  # the grant crossed the cancel on the wire
                session.send_and_forget(
                    "unlock", {"key": key, "exclusive": exclusive, "owner": owner}
                )

        deadline = lock_deadline(wait, self.timeout)
        try:
            session.call("lock", arguments, deadline, give_back)
        except CallTimeoutError:
            raise timed_out(f"lock {key!r}", session.target, deadline or 0.0) from None
        except ConnectionLostError as error:
            raise LockFailedError(f"cannot lock {key!r}: {error}") from error
        # Granted through the session open now (a reply comes on the session it was asked
        # on); one lost since is noticed by release.
        held = HeldLock(key, owner, exclusive, session.generation)
        self._held_locks.add(held)
        return held

    def _release_lock(self, held: HeldLock) -> None:
        if self._session.generation != held.generation:
            held.lost = True
        lost = lock_lost_error(held)
        if lost is not None:
            self._held_locks.discard(held)
            raise lost
        mode = "exclusive" if held.exclusive else "shared"
        try:
            self._timed_request(
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

    def test_lock(
        self, key: str, *, exclusive: bool = True, timeout: Timeout = CLIENT_DEFAULT
    ) -> bool:
        """True if the lock could be taken in that mode right now (transient information)."""
        reply = self._timed_request("test_lock", timeout, key=check_key(key), exclusive=exclusive)
        free: bool = reply["free"]
        return free

    def _thread_owner(self) -> str:
        owner: str | None = getattr(self._owners, "name", None)
        if owner is None:
            owner = f"{self._owner_prefix}-thread-{next(self._owner_numbers)}"
            self._owners.name = owner
        return owner


class _BlockingChangeStream:
    """One ``Client.subscribe`` stream: batches coalesced until the iterating thread takes
    them; it resumes across reconnects like ``AsyncClient``'s streams."""

    def __init__(self, client: Client, interval: float, prefix: str) -> None:
        self._client = client
        self._interval = interval
        self._prefix = prefix
        self._buffer = BlockingCoalescingBuffer()
        self._subscription: Subscription | None = None
        self._error: Exception | None = None
        self._closed = False

    def changes(self) -> Iterator[StateChange]:
        client = self._client
        self._subscription = client._session.subscribe(
            self._interval, self._prefix, self._buffer.push, timeout=client.timeout
        )
        client._streams.add(self)
        try:
            while not self._closed:
                change = self._buffer.take()
                if change is None:
                    break
                yield change
            if self._error is not None:
                raise self._error
        finally:
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
        if self._closed:
            return
        self._closed = True
        if self._subscription is not None:
            self._client._session.unsubscribe(self._subscription)
        self._buffer.wake()
