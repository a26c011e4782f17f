"""A session of the statehub session protocol, independent of any transport.

``statehub.server.transport.serve_session`` drives it: each frame the client sends goes to
``Session.receive``, each frame ``Session.next_frame`` returns is written, and when the
connection is gone ``Session.close`` releases everything the session held, once. The
session knows nothing of gRPC or WebSocket: it speaks in frames of bytes and exceptions.

Every message is encoded when it is queued (see ``outbox.py``), so what a client holds
on the server is counted in bytes and bounded (see ``limits.py``).

Requests are handled in the order they arrive, but a ``lock`` that has to wait and a
``call`` run as tasks, so they never hold up the requests behind them: replies may come
out of order and are matched by id (see ``docs/protocol.md``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable, Mapping
from typing import Any, TypeVar

from statehub.auth import Credentials, OpenAccess, Principal, Right, UnauthenticatedError
from statehub.auth.authenticator import Authenticator
from statehub.auth.permissions import UNRESTRICTED, AdminRight, Permissions
from statehub.core.commands import CommandRegistration, CommandRegistry
from statehub.core.entries import KeyFacts
from statehub.core.key_history import KeyVersion
from statehub.core.limits import check_seconds
from statehub.core.pacing import Pacer
from statehub.core.rwlock import LockHolding
from statehub.core.values import check_key
from statehub.errors import (
    LimitExceededError,
    MessageTooLargeError,
    ProtocolError,
    RequestCancelledError,
    StatehubError,
)
from statehub.protocol.codec import decode_batch, encode_value
from statehub.protocol.errors import error_to_wire, status_of
from statehub.server.connections import ConnectionBudget
from statehub.server.force_release import KINDS as FORCE_RELEASE_KINDS
from statehub.server.force_release import force_release_lease, force_release_lock
from statehub.server.limits import SessionLimits, check_client_name, check_token
from statehub.server.operations.commands import callable_only, run_command
from statehub.server.operations.leases import change_leases
from statehub.server.operations.locks import (
    acquire_lock,
    list_locks,
    lock_is_free,
    release_lock,
)
from statehub.server.operations.owner import owner_token
from statehub.server.operations.reads import only_readable, readable_keys
from statehub.server.operations.state import submit_write
from statehub.server.outbox import FRAME_HEADER_BYTES, Outbox
from statehub.server.peer import Peer
from statehub.server.subscriptions import FanoutGroups, SessionBatches, Subscription
from statehub.store.answers import Answer, Completed, chained, mapped
from statehub.store.leases import Lease
from statehub.store.state_dictionary import StateDictionary

logger = logging.getLogger(__name__)

Reply = dict[str, Any]
T = TypeVar("T")


class SessionObserver:
    """Told what sessions do, for metrics (the web edge's ``/metrics``); does nothing here.

    It keeps the counting where the events happen without this layer knowing Prometheus.
    """

    def frame_received(self, session: Session, size: int) -> None: ...

    def frame_sent(self, session: Session, size: int) -> None: ...

    def request_done(self, op: str, outcome: str) -> None:
        """``outcome`` is "ok" or the error's status name (``NOT_FOUND``...)."""

    def committed(self, seconds: float) -> None: ...

    def durable_waited(self, seconds: float) -> None: ...

    def delivered(self, revisions: int) -> None:
        """A change batch went out carrying ``revisions`` commits (1 + those coalesced)."""


class Hub:
    """What every session of one server shares: state, locks, commands, limits, identities."""

    def __init__(
        self,
        *,
        state: StateDictionary,
        commands: CommandRegistry,
        max_message_bytes: int,
        keepalive_s: float,
        min_interval: float = 0.0,
        limits: SessionLimits | None = None,
        auth: Authenticator | OpenAccess | None = None,
    ) -> None:
        self.state = state
        #: Who a connection is (``Authenticator`` with ``--auth``, else everyone may do all).
        self.auth: Authenticator | OpenAccess = auth if auth is not None else OpenAccess()
        #: The read/write locks: the store's (shared by every server over a shared store).
        self.locks = state.store.lock_table()
        self.commands = commands
        self.max_message_bytes = max_message_bytes
        self.keepalive_s = keepalive_s
        self.min_interval = min_interval
        self.limits = limits if limits is not None else SessionLimits()
        self.sessions: set[Session] = set()
        #: Open connections of the web and TCP ports, against their bound.
        self.connections = ConnectionBudget()
        self.observer = SessionObserver()
        #: Called after ``replace_auth`` re-checked the sessions, so that connections which
        #: are not sessions (NanoVer's WebSocket clients) are checked again too.
        self.auth_listeners: list[Callable[[], None]] = []
        #: Subscribers at interval 0 that share one catch-up and one encoding per change.
        self.fanout: FanoutGroups[Subscription] = FanoutGroups(
            self, SessionBatches(max_message_bytes)
        )

    def replace_auth(self, auth: Authenticator | OpenAccess) -> None:
        """Use new identities (a reloaded file); each session is authenticated again.

        A session still allowed keeps running with its new rights; one whose credential
        no longer authenticates is ended (its client, reconnecting, is refused).
        """
        self.auth = auth
        for session in list(self.sessions):
            session.reauthenticate()
        for listener in list(self.auth_listeners):
            listener()

    def monitoring_identity(self, credentials: Credentials, what: str) -> Principal:
        """Who may read how the server is doing (``/metrics``, ``/readyz``: ``what``).

        The identity ``credentials`` prove, if it has the admin right ``metrics``: such
        pages show how many sessions, keys and commands there are and how busy the server
        is, which is not for anyone who can reach the port. Without ``--auth`` everyone
        may. ``UnauthenticatedError`` for a credential refused (or none where no anonymous
        role exists), ``PermissionDeniedError`` for an identity without the right.
        """
        principal = self.auth.authenticate(credentials)
        principal.require_admin(AdminRight.METRICS, what)
        return principal

    def end_sessions(self) -> None:
        """Ask every session to end once its pending frames are written (server stopping)."""
        for session in list(self.sessions):
            session.end()

    def holds_lost(self, locks: Mapping[Hashable, list[tuple[str, bool]]]) -> None:
        """The store's other servers released every lease and lock of this server's
        sessions (``StateDictionary.holds_lost``): tell each session what it lost."""
        by_session: dict[str, list[tuple[str, str, bool]]] = {}
        for owner, holds in locks.items():
            if isinstance(owner, tuple) and len(owner) == 2:  # (session id, name): _lock_args
                session_id, name = owner
                by_session.setdefault(session_id, []).extend(
                    (key, name, exclusive) for key, exclusive in holds
                )
        for session in list(self.sessions):
            session.holds_lost(by_session.get(session.id, []))


class Session:
    """One connected client: its token, leases, read/write locks, subscriptions, requests."""

    # A server holds thousands of idle sessions: slots instead of a dict per instance, and
    # each container below costs nothing until it is used (see docs/fanout.md).
    __slots__ = (
        "_cancellable",
        "_closed",
        "_leased",
        "_lock_owners",
        "_next_sub",
        "_outbox",
        "_subscriptions",
        "_tasks",
        "_waiting",
        "client",
        "credentials",
        "failure",
        "hub",
        "id",
        "peer",
        "principal",
        "token",
    )

    def __init__(self, hub: Hub, peer: Peer) -> None:
        self.hub = hub
        self.peer = peer
        self.id = uuid.uuid4().hex
        #: What the transport saw (gRPC metadata, TLS client certificate); hello may add.
        self.credentials = Credentials(peer.bearer_token, peer.certificate_identities)
        #: Who the session is, once hello authenticated it.
        self.principal: Principal = UNRESTRICTED
        #: The lease owner: this session of this identity, never a name a client chose.
        self.token: str | None = None
        self.client = ""
        #: Why the session was ended from the server's side (``fail``), if it was.
        self.failure: StatehubError | None = None
        self._outbox = Outbox(max_frame_bytes=hub.max_message_bytes)
        self._closed = False
        # Dicts, not sets: an empty dict costs 64 bytes, an empty set 216.
        #: Every task the session started for a request (subscriptions have their own).
        self._tasks: dict[asyncio.Future[Any], None] = {}
        self._waiting: dict[int, asyncio.Future[Reply]] = {}  # requests still running, by id
        self._cancellable: dict[int, asyncio.Future[Reply]] = {}  # those a client may cancel
        #: By sub id (each holds its own task while it needs one; see docs/fanout.md).
        self._subscriptions: dict[int, Subscription] = {}
        self._next_sub = 1
        self._lock_owners: dict[tuple[str, Hashable], None] = {}  # released on close
        self._leased: dict[str, None] = {}  # keys this session may hold leased
        hub.sessions.add(self)

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    # -- the transport's side (see transport.serve_session) ------------------------------

    async def receive(self, frame: bytes) -> None:
        """Handle one frame from the client.

        Raises ``ProtocolError`` if the frame cannot be decoded: the transport should end
        the connection with that error, since no reply can name the requests it held.
        Waits (backpressure) while the client has more than its limit of bytes unread.
        """
        if self._closed:
            return
        self.hub.observer.frame_received(self, len(frame))
        messages = decode_batch(frame, strict_map_key=False)
        limit = self.hub.max_message_bytes
        if len(frame) > limit:
            error = MessageTooLargeError(
                f"a frame of {len(frame)} bytes is over the limit of {limit} bytes "
                "(max_message_bytes); none of its requests was carried out"
            )
            for message in messages:
                self._send_error(message.get("id"), error)
            return
        max_queued = self.hub.limits.max_queued_bytes
        for message in messages:
            await self._outbox.wait_below(max_queued)
            if self._closed:
                return
            self._dispatch(message)

    async def next_frame(self) -> bytes | None:
        """The next frame to write; None once the session has ended and everything is out."""
        frame = await self._outbox.next_frame()
        if frame is not None:
            self.hub.observer.frame_sent(self, len(frame))
        return frame

    def end(self) -> None:
        """End the session once what is queued has been written (``next_frame`` -> None)."""
        self._outbox.close()

    def holds_lost(self, locks: list[tuple[str, str, bool]]) -> None:
        """The server was cut off from the shared store and the other servers released
        every lease of this session and its ``locks`` (key, owner, exclusive): say so."""
        reason = "this server was cut off from the shared store and its holds were released"
        self.tell_lost(list(self._leased), locks, reason)

    def fail(self, error: StatehubError) -> None:
        """End the session because of ``error`` (an undecodable frame, a refused frame
        length, a client that stopped answering, a credential no longer valid).

        This is the one way a connection fails: the error is queued as the session's last
        message, an error with no request id, after what was already queued; every
        transport writes it like any frame and then closes, and the client raises it with
        its own type (``docs/protocol.md``, "How a session ends"). The session closes at
        once, releasing what it held: a client that does not take its last frames (a
        frozen one) must not keep them.
        """
        if self.failure is not None or self._closed:
            return
        self.failure = error
        self._send_error(None, error)
        self.close()

    def ping(self, number: int) -> None:
        """Ask the client for a sign of life (the heartbeat): it answers ``{"pong": n}``."""
        if not self._closed:
            self._outbox.push(encode_value({"ping": number}))

    def close(self) -> None:
        """The connection is gone: release every lease, lock and subscription, once.

        Synchronous on purpose: nothing can interrupt it half-way, whatever cancels the
        transport's task meanwhile. Tasks are cancelled, not awaited; a lock a cancelled
        waiter was granted in the meantime is given back by the lock table itself.
        """
        if self._closed:
            return
        self._closed = True
        self.end()
        try:
            for task in self._tasks:
                task.cancel()
            subscriptions = list(self._subscriptions.values())
            self._subscriptions.clear()
            for subscription in subscriptions:
                subscription.stop()
            for owner in self._lock_owners:
                self.hub.locks.release_owner(owner)
        finally:
            self._lock_owners.clear()
            if self.token is not None:
                self.hub.state.release_owner(self.token)  # the session's own: no one shares it
            self.hub.sessions.discard(self)
            logger.debug("session %s (%s, %s) closed", self.id, self.client, self.peer.address)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_bytes(self) -> int:
        """Bytes of encoded messages waiting for the transport to write them."""
        return self._outbox.queued_bytes

    # -- dispatch ------------------------------------------------------------------------

    def _dispatch(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if request_id is None and "pong" in message:
            return  # the answer to a heartbeat ping: receiving its frame was the point
        try:
            if type(request_id) is not int:
                raise ProtocolError(f"every request needs an int 'id', got {_describe(request_id)}")
            op = message.get("op")
            if op == "hello" and self.token is not None:
                raise ProtocolError("'hello' was already sent on this session")
            if op != "hello" and self.token is None:
                raise ProtocolError(f"the first request must be 'hello', got op {op!r}")
            handler = _OPS.get(op) if isinstance(op, str) else None
            if handler is None:
                known = sorted(_OPS)
                raise ProtocolError(f"unknown op {op!r}; known ops: {', '.join(known)}")
            if request_id in self._waiting:
                raise ProtocolError(f"request id {request_id} is still waiting for its reply")
            if op in _WAITING_OPS and len(self._waiting) >= self.hub.limits.max_pending_requests:
                raise LimitExceededError(
                    f"{op}: this session already has {len(self._waiting)} requests waiting "
                    f"(max_pending_requests={self.hub.limits.max_pending_requests})"
                )
            reply = handler(self, message)
        except Exception as error:
            self._request_done(message.get("op"), error)
            self._send_error(request_id, error)
            return
        if isinstance(reply, dict):
            self._request_done(op, None)
            self._send({"id": request_id, "ok": reply})
        else:
            self._reply_later(request_id, message["op"], reply, cancellable=op in _CANCELLABLE_OPS)

    def _reply_later(
        self,
        request_id: int,
        op: str,
        reply: Awaitable[Reply],
        *,
        cancellable: bool,
    ) -> None:
        """Run a request that has to wait; later requests don't. Exactly one reply follows."""
        task = self._spawn(reply)
        self._waiting[request_id] = task
        if cancellable:
            self._cancellable[request_id] = task
        task.add_done_callback(lambda done: self._answer(request_id, op, done))

    def _answer(self, request_id: int, op: str, task: asyncio.Future[Reply]) -> None:
        self._waiting.pop(request_id, None)
        self._cancellable.pop(request_id, None)
        if self._closed:
            return
        if task.cancelled():
            error: BaseException = RequestCancelledError(f"request {request_id} cancelled")
            self._request_done(op, error)
            self._send_error(request_id, error)
        elif (failure := task.exception()) is not None:
            self._request_done(op, failure)
            self._send_error(request_id, failure)
        else:
            self._request_done(op, None)
            self._send({"id": request_id, "ok": task.result()})

    def _request_done(self, op: object, error: BaseException | None) -> None:
        name = op if isinstance(op, str) and op in _OPS else "unknown"
        self.hub.observer.request_done(name, "ok" if error is None else status_of(error))

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(work)
        self._tasks[task] = None
        task.add_done_callback(self._forget_task)
        return task

    def _forget_task(self, task: asyncio.Future[Any]) -> None:
        self._tasks.pop(task, None)

    def _send(self, message: Reply) -> None:
        """Encode and queue a reply; one that cannot be sent becomes an error reply."""
        if self._closed:
            return
        try:
            encoded = encode_value(message)
        except TypeError as error:  # the core refuses what cannot be encoded: a server bug
            logger.error("session %s: cannot encode a reply", self.id, exc_info=error)
            self._send_error(message.get("id"), error)
            return
        limit = self.hub.max_message_bytes - FRAME_HEADER_BYTES
        if len(encoded) > limit:
            self._send_error(
                message.get("id"),
                MessageTooLargeError(
                    f"the reply is {len(encoded)} bytes, over the limit of {limit} bytes "
                    "(max_message_bytes); ask for fewer keys"
                ),
            )
            return
        self._outbox.push(encoded)

    def tell_lost(
        self, leases: Iterable[str], locks: Iterable[tuple[str, str, bool]], reason: str
    ) -> None:
        """Tell the client that these ``leases`` and ``locks`` (key, owner, exclusive) were
        taken away while its session lives on, and why (an admin's force release, a sweep of
        this cut-off server): fencing tokens still protect resources; this lets the client
        stop believing it holds them."""
        leases = sorted(leases)
        for key in leases:
            self._leased.pop(key, None)
        lost = [{"key": key, "owner": owner, "exclusive": excl} for key, owner, excl in locks]
        if self._closed or (not leases and not lost):
            return
        self._outbox.push(
            encode_value({"lost": {"leases": leases, "locks": lost, "reason": reason}})
        )

    def _send_error(self, request_id: object, error: BaseException) -> None:
        if not isinstance(error, StatehubError) and status_of(error) == "UNKNOWN":
            logger.error("session %s: unexpected error", self.id, exc_info=error)
        reply_id = request_id if type(request_id) is int else None
        self._outbox.push(encode_value({"id": reply_id, "error": error_to_wire(error)}))

    # -- ops -----------------------------------------------------------------------------

    def _hello(self, message: dict[str, Any]) -> Reply:
        token = message.get("token")
        if token is not None and type(token) is not str:
            raise TypeError(f"hello: 'token' must be a str or None, got {_describe(token)}")
        if token is not None:
            check_token(token, "hello: 'token'")
        client = message.get("client", "")
        if type(client) is not str:
            raise TypeError(f"hello: 'client' must be a str, got {_describe(client)}")
        check_client_name(client, "hello: 'client'")
        credential = message.get("credential")
        if credential is not None and type(credential) is not str:
            raise TypeError(f"hello: 'credential' must be a str, got {_describe(credential)}")
        if credential is not None:
            check_token(credential, "hello: 'credential'")
        if credential is not None:
            self.credentials = Credentials(credential, self.credentials.cert_names)
        try:
            self.principal = self.hub.auth.authenticate(self.credentials)
        except UnauthenticatedError:
            # Nothing else may be asked on this connection: end it once the error is out.
            asyncio.get_running_loop().call_soon(self.end)
            raise
        # The owner of the session's leases: a client-chosen token would let anyone who
        # names it take over (or release) the leases of whoever chose it first.
        self.token = owner_token(self.id, self.principal.name)
        self.client = client
        logger.debug("session %s: hello from %r at %s", self.id, client, self.peer.address)
        return {
            "session": self.id,
            "token": self.token,
            "identity": self.principal.name,
            "revision": self.hub.state.revision,
            "epoch": self.hub.state.epoch,
            "keepalive_s": self.hub.keepalive_s,
            "max_message_bytes": self.hub.max_message_bytes,
            "rights": _rights_reply(self.principal.permissions),
        }

    def _get(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        names = None
        if message.get("keys") is not None:
            names = [check_key(key) for key in _list_arg(message, "get", "keys")]
            self.principal.require(Right.READ, names, "get")
        with_facts = message.get("facts") is not None and _bool_arg(message, "get", "facts")
        facts: dict[str, KeyFacts] = {}
        if with_facts:
            revision, values, facts = self.hub.state.shared_entries(names)
        else:
            revision, values = self.hub.state.shared_values(names)
        if names is None:  # all this identity may read
            values = only_readable(values, self.principal)
        if with_facts:
            reply = {
                "values": values,
                "facts": _facts_reply(values, facts, {}),
                "revision": revision,
            }
            return self._with_time_left(reply, values)
        return {"values": values, "revision": revision}

    def _with_time_left(
        self, reply: dict[str, Any], keys: dict[str, Any]
    ) -> Reply | Awaitable[Reply]:
        """``reply`` with seconds left appended to the facts of keys that expire: at once
        from an in-process store, after asking a shared one (Redis's clock)."""

        def with_time_left(time_left: dict[str, float]) -> Reply:
            _add_time_left(reply["facts"], time_left)
            return reply

        return _reply_from(self.hub.state.submit_expiring(keys), with_time_left)

    def _history(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        key = check_key(message.get("key"))
        self.principal.require(Right.READ, [key], "history")
        limit, since = message.get("limit"), message.get("since")
        state = self.hub.state
        versions = state.submit_history(key, limit=limit, since=since)
        return _reply_from(versions, lambda found: _history_reply(state, found))

    def _update(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        updates = message.get("updates")
        updates = {} if updates is None else updates
        if type(updates) is not dict:
            raise TypeError(f"update: 'updates' must be a map, got {_describe(updates)}")
        removals = _list_arg(message, "update", "removals", [])
        expect = message.get("expect")
        if expect is not None and type(expect) is not dict:
            raise TypeError(f"update: 'expect' must be a map, got {_describe(expect)}")
        ttl = message.get("ttl")
        if ttl is not None and type(ttl) is not dict:
            raise TypeError(f"update: 'ttl' must be a map, got {_describe(ttl)}")
        ephemeral = message.get("ephemeral")
        if ephemeral is not None:
            ephemeral = _list_arg(message, "update", "ephemeral")
        state = self.hub.state
        started = time.perf_counter()
        assert self.token is not None  # dispatch answers nothing but hello before it
        revision = submit_write(
            state,
            self.principal,
            self.token,
            updates,
            removals,
            op="update",
            expect=expect,
            ttl=ttl,
            ephemeral=ephemeral,
        )
        if not revision.done():  # a store shared by servers: answered by its batch
            return self._reply_when_committed(revision, started)
        committed = revision.result()  # a refusal raises here, and is the reply
        self.hub.observer.committed(time.perf_counter() - started)
        if state.is_durable(committed):
            return {"revision": committed}
        return self._when_durable(committed)

    def _reply_when_committed(self, committed: Answer[int], started: float) -> Answer[Reply]:
        """The reply to a change a store commits in batches: chained to the commit, not a
        task per change (under a stream of writes, tasks were a large share of a server's
        time)."""

        def acknowledge(revision: int) -> Answer[Reply]:
            self.hub.observer.committed(time.perf_counter() - started)
            if self.hub.state.is_durable(revision):
                return Completed({"revision": revision})
            return self._spawn(self._when_durable(revision))

        return chained(committed, acknowledge)

    async def _when_durable(self, revision: int) -> Reply:
        """Acknowledge a committed change only once as durable as the store promises."""
        started = time.perf_counter()
        await self.hub.state.wait_durable_async(revision)
        self.hub.observer.durable_waited(time.perf_counter() - started)
        return {"revision": revision}

    def _leases(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        acquire = message.get("acquire")
        acquire = {} if acquire is None else acquire
        if type(acquire) is not dict:
            raise TypeError(f"leases: 'acquire' must be a map, got {_describe(acquire)}")
        release = _list_arg(message, "leases", "release", [])
        assert self.token is not None  # dispatch answers nothing but hello before it
        changing = change_leases(
            self.hub.state,
            self.principal,
            self.token,
            acquire,
            release,
            op="leases",
            held=self._leased,
            max_leases=self.hub.limits.max_leases,
        )
        return _reply_from(changing, lambda _: {})

    def _list_leases(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        return _reply_from(self.hub.state.submit_leases(), self._leases_reply)

    def _leases_reply(self, leases: list[Lease]) -> Reply:
        readable = self.principal.permissions.read
        shown = [lease for lease in leases if lease.key in readable]
        by_token = {session.token: session for session in self.hub.sessions}
        holders: dict[str, dict[str, str]] = {}
        for lease in shown:
            holder = by_token.get(lease.owner) if isinstance(lease.owner, str) else None
            if holder is not None:  # a session of this server (not a NanoVer client's)
                holders[lease.key] = self._who(holder)
        return {
            "leases": [
                [lease.key, lease.owner == self.token, lease.seconds_left] for lease in shown
            ],
            "holders": holders,
        }

    def _who(self, session: Session) -> dict[str, str]:
        """A session as a listing shows it: its id and client name, and its identity, if this
        session may see sessions (the admin right ``sessions``, or a server without auth);
        else only itself is named, another session is ``{"session": "", "client": ""}``."""
        if AdminRight.SESSIONS not in self.principal.permissions.admin:
            if session is not self:
                return {"session": "", "client": ""}
            return {"session": session.id, "client": session.client}
        return {
            "session": session.id,
            "client": session.client,
            "identity": session.principal.name,
        }

    def _keys(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        prefix = message.get("prefix", "")
        prefix = "" if prefix is None else prefix
        if type(prefix) is not str:
            raise TypeError(f"keys: 'prefix' must be a str, got {_describe(prefix)}")
        with_values = message.get("values", False)
        if type(with_values) is not bool:
            raise TypeError(f"keys: 'values' must be a bool, got {_describe(with_values)}")
        with_facts = message.get("facts", False)
        if type(with_facts) is not bool:
            raise TypeError(f"keys: 'facts' must be a bool, got {_describe(with_facts)}")
        readable = self.principal.permissions.read
        facts: dict[str, KeyFacts] = {}
        if with_facts:
            revision, content, facts = self.hub.state.shared_entries(prefix=prefix)
        else:
            revision, content = self.hub.state.shared_values()
        found = {
            key: content[key]
            for key in sorted(content)
            if key.startswith(prefix) and key in readable
        }
        reply: Reply = (
            {"values": found, "revision": revision}
            if with_values
            else {"keys": list(found), "revision": revision}
        )
        if with_facts:
            reply["facts"] = _facts_reply(found, facts, {})
            return self._with_time_left(reply, found)
        return reply

    def _list_locks(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        return _reply_from(list_locks(self.hub.locks, self.principal), self._locks_reply)

    def _locks_reply(self, holdings: list[LockHolding]) -> Reply:
        sees_sessions = AdminRight.SESSIONS in self.principal.permissions.admin
        by_id = {session.id: session for session in self.hub.sessions}

        def who(owner: object) -> dict[str, Any]:
            # A session's lock owners are (session id, owner name): see _lock_args.
            session_id, name = owner if isinstance(owner, tuple) else ("", "")
            if not sees_sessions and session_id != self.id:
                # Another session, for a viewer who may not see sessions: that it is held.
                return {"session": "", "client": "", "owner": ""}
            session = by_id.get(session_id)
            shown: dict[str, Any] = {"session": session_id, "client": ""}
            if session is not None:
                shown.update(self._who(session))
            shown["owner"] = name if isinstance(name, str) else ""
            return shown

        locks = []
        for held in holdings:
            holders = [who(owner) for owner in held.holders]
            for holder, grant in zip(holders, held.grants, strict=False):
                if grant is not None:
                    holder["fence"], holder["since"] = grant
            waiters = []
            for owner, exclusive, since in held.waiters:
                waiter = who(owner)
                waiter.update(mode="exclusive" if exclusive else "shared", since=since)
                waiters.append(waiter)
            locks.append(
                {
                    "key": held.key,
                    "mode": held.mode,
                    "holders": holders,
                    "mine": any(
                        isinstance(owner, tuple) and owner[0] == self.id for owner in held.holders
                    ),
                    "waiting": held.waiting,
                    "waiters": waiters,
                }
            )
        return {"locks": locks}

    def _list_sessions(self, message: dict[str, Any]) -> Reply:
        self.principal.require_admin(AdminRight.SESSIONS, "list_sessions")
        return {
            "sessions": [
                {
                    "session": session.id,
                    "identity": session.principal.name,
                    "method": session.principal.method,
                    "client": session.client,
                    "peer": session.peer.address,
                    "transport": session.peer.transport,
                    "subscriptions": len(session._subscriptions),
                    "you": session is self,
                }
                for session in sorted(self.hub.sessions, key=lambda s: (s.client, s.id))
                if session.token is not None
            ]
        }

    def _clear_leases(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        self.principal.require_admin(AdminRight.CLEAR_LEASES, "clear_leases")
        return _reply_from(self.hub.state.submit_clear_locks(), lambda _: {})

    async def _force_release(self, message: dict[str, Any]) -> Reply:
        self.principal.require_admin(AdminRight.FORCE_UNLOCK, "force_release")
        kind = message.get("kind")
        if kind not in FORCE_RELEASE_KINDS:
            raise ValueError(f"force_release: 'kind' must be 'lock' or 'lease', got {kind!r}")
        key = check_key(message.get("key"))
        by = f"{self.client or 'unnamed client'} ({self.principal.name})"
        if kind == "lock":
            released = await force_release_lock(self.hub.locks, self.hub.sessions, key, by)
        else:
            released = await force_release_lease(self.hub.state, self.hub.sessions, key, by)
        return {"released": released}

    def _subscribe(self, message: dict[str, Any]) -> Reply:
        limit = self.hub.limits.max_subscriptions
        if len(self._subscriptions) >= limit:
            raise LimitExceededError(
                f"subscribe: this session already has {len(self._subscriptions)} subscriptions "
                f"(max_subscriptions={limit}); unsubscribe one first"
            )
        interval = _seconds(message.get("interval", 0.0), "subscribe", "interval")
        if interval is None or math.isinf(interval):
            raise ValueError(
                "subscribe: 'interval' must be a finite number of seconds >= 0, "
                f"got {_describe(message.get('interval'))}"
            )
        pacer = Pacer(max(interval, self.hub.min_interval))
        prefix = message.get("prefix", "")
        if prefix is None:
            prefix = ""
        if type(prefix) is not str:
            raise TypeError(f"subscribe: 'prefix' must be a str, got {_describe(prefix)}")
        since = message.get("since")
        if since is not None and type(since) is not int:
            raise TypeError(f"subscribe: 'since' must be an int or None, got {_describe(since)}")
        epoch = message.get("epoch")
        if epoch is not None and type(epoch) is not str:
            raise TypeError(f"subscribe: 'epoch' must be a str or None, got {_describe(epoch)}")
        if epoch != self.hub.state.epoch:
            # A revision of another history, or of none named (a number kept from an
            # earlier connection): only a snapshot is exact.
            since = None
        readable_keys(self.principal, "subscribe")
        sub = self._next_sub
        self._next_sub += 1
        self._start_subscription(sub, pacer, prefix, since)
        return {"sub": sub}

    def _start_subscription(self, sub: int, pacer: Pacer, prefix: str, since: int | None) -> None:
        readable = self.principal.permissions.read
        subscription = Subscription(self.hub, self, self._outbox, sub, pacer, prefix, readable)
        self._subscriptions[sub] = subscription
        subscription.start(since)

    def subscription_ended(self, subscription: Subscription) -> None:
        """The state ended under ``subscription`` (``Subscription`` calls this)."""
        if self._subscriptions.get(subscription.sub) is subscription:
            del self._subscriptions[subscription.sub]

    def _unsubscribe(self, message: dict[str, Any]) -> Reply:
        sub = message.get("sub")
        if type(sub) is not int or sub not in self._subscriptions:
            raise KeyError(f"unsubscribe: no subscription {sub!r} on this session")
        self._subscriptions.pop(sub).stop()
        return {}

    def _lock(self, message: dict[str, Any]) -> Coroutine[Any, Any, Reply]:
        # Not a coroutine itself: the request takes its place in the lock's queue now,
        # before the requests behind it in the frame are handled.
        key, exclusive, owner = self._lock_args(message, "lock")
        timeout = _seconds(message.get("timeout"), f"lock on {key!r}", "timeout")
        if timeout is not None and math.isinf(timeout):
            timeout = None
        acquisition = acquire_lock(
            self.hub.locks, self.principal, key, owner, exclusive=exclusive, timeout=timeout
        )
        self._lock_owners[owner] = None  # queued: released with the session, however it ends
        return acquisition.replying(lambda fence: {"fence": fence})

    def _unlock(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        key, exclusive, owner = self._lock_args(message, "unlock")
        released = release_lock(self.hub.locks, self.principal, key, owner, exclusive=exclusive)
        return _reply_from(released, lambda _: {})

    def _test_lock(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        key = check_key(message.get("key"))
        exclusive = _bool_arg(message, "test_lock", "exclusive")
        free = lock_is_free(self.hub.locks, self.principal, key, exclusive=exclusive)
        return _reply_from(free, lambda answer: {"free": answer})

    async def _call(self, message: dict[str, Any]) -> Reply:
        name = message.get("name")
        if type(name) is not str:
            raise TypeError(f"call: 'name' must be a str, got {_describe(name)}")
        arguments = message.get("arguments")
        arguments = {} if arguments is None else arguments
        if type(arguments) is not dict:
            raise TypeError(f"call {name!r}: 'arguments' must be a map, got {_describe(arguments)}")
        return {
            "result": await run_command(self.hub.commands, self.principal, name, arguments, "call")
        }

    def _commands(self, message: dict[str, Any]) -> Reply:
        commands = self.hub.commands
        registrations = callable_only(commands.commands, self.principal)
        return {
            "commands": callable_only(commands.list(), self.principal),
            "arguments": {
                name: _arguments_of(registration) for name, registration in registrations.items()
            },
        }

    def _ping(self, message: dict[str, Any]) -> Reply:
        return {}

    def _cancel(self, message: dict[str, Any]) -> Reply:
        """Stop a lock wait or a command still waiting; its own reply says ``cancelled``.

        An update waiting to be durable is already applied, so it cannot be cancelled: it
        is answered as applied (``cancelled: false`` here).
        """
        target = message.get("request")
        if type(target) is not int:
            raise TypeError(f"cancel: 'request' must be an int id, got {_describe(target)}")
        task = self._cancellable.get(target)
        if task is None or not task.cancel():
            return {"cancelled": False}  # answered already, on its way, or not cancellable
        return {"cancelled": True}

    def _lock_args(self, message: dict[str, Any], op: str) -> tuple[str, bool, tuple[str, str]]:
        key = check_key(message.get("key"))
        exclusive = _bool_arg(message, op, "exclusive")
        owner = message.get("owner", "")
        if type(owner) is not str:
            raise TypeError(f"{op} {key!r}: 'owner' must be a str, got {_describe(owner)}")
        check_token(owner, f"{op} {key!r}: 'owner'")  # kept with the lock while it is held
        return key, exclusive, (self.id, owner)

    def reauthenticate(self) -> None:
        """After the identities changed: keep the rights the credential now has, or end.

        Subscriptions whose readable keys changed start again with a snapshot, so the
        client drops keys it may no longer read and gets those it now may.
        """
        if self.token is None or self._closed:
            return
        try:
            principal = self.hub.auth.authenticate(self.credentials)
        except UnauthenticatedError as error:
            logger.info("session %s (%s) ended: %s", self.id, self.principal.name, error)
            self.fail(error)
            return
        previous, self.principal = self.principal, principal
        if principal.permissions.read != previous.permissions.read:
            for sub, subscription in list(self._subscriptions.items()):
                subscription.stop()
                self._start_subscription(sub, subscription.pacer, subscription.prefix, None)


#: Every op of the protocol and the method that answers it (one table for all sessions).
_OPS: dict[str, Callable[[Session, dict[str, Any]], Reply | Awaitable[Reply]]] = {
    "hello": Session._hello,
    "get": Session._get,
    "update": Session._update,
    "history": Session._history,
    "leases": Session._leases,
    "list_leases": Session._list_leases,
    "keys": Session._keys,
    "list_locks": Session._list_locks,
    "list_sessions": Session._list_sessions,
    "subscribe": Session._subscribe,
    "unsubscribe": Session._unsubscribe,
    "unlock": Session._unlock,
    "test_lock": Session._test_lock,
    "commands": Session._commands,
    "ping": Session._ping,
    "cancel": Session._cancel,
    "lock": Session._lock,
    "call": Session._call,
    "clear_leases": Session._clear_leases,
    "force_release": Session._force_release,
}


#: Ops whose reply may have to wait (and so count against max_pending_requests).
_WAITING_OPS = frozenset({"lock", "call", "update"})
#: Ops a client may ``cancel`` while they wait (an update is applied before it waits).
_CANCELLABLE_OPS = frozenset({"lock", "call"})


def _reply_from(answer: Answer[T], reply: Callable[[T], Reply]) -> Reply | Awaitable[Reply]:
    """The reply to a request answered by the store: at once if its answer is in (an
    in-process store's); else a future of it (a shared store's), settled by a callback.
    Either way no task is made for it."""
    if answer.done():
        return reply(answer.result())
    return mapped(answer, reply)


def _seconds(value: object, op: str, name: str) -> float | None:
    """A number of seconds >= 0 from a request (None stays None; infinity is kept)."""
    return None if value is None else check_seconds(value, f"{op}: {name!r}", allow_infinity=True)


def _arguments_of(registration: CommandRegistration) -> list[list[Any]]:
    """A command's named arguments, for a form: [[name, required, default or None]], those
    of its callback's signature first (when it has one to read), then defaults it does not
    name (a client's command forwards whatever it is given)."""
    defaults = registration.default_arguments
    found: list[list[Any]] = []
    named = set()
    if registration.signature is not None:
        for parameter in registration.signature.parameters.values():
            if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                continue
            named.add(parameter.name)
            if parameter.name in defaults:
                found.append([parameter.name, False, defaults[parameter.name]])
            elif parameter.default is parameter.empty:
                found.append([parameter.name, True, None])
            else:
                default = parameter.default
                shown = (
                    default if default is None or type(default) in (bool, int, float, str) else None
                )
                found.append([parameter.name, False, shown])
    found.extend([name, False, value] for name, value in defaults.items() if name not in named)
    return found


def _rights_reply(permissions: Permissions) -> dict[str, list[str]]:
    """What the identity may do, for a client to show only what it may use (the dashboard's
    read-only mode): key prefixes per right ("" = every key), command name patterns, and
    admin rights. The server still checks every request."""
    return {
        "read": list(permissions.read.prefixes),
        "write": list(permissions.write.prefixes),
        "lease": list(permissions.lease.prefixes),
        "lock": list(permissions.lock.prefixes),
        "call": list(permissions.call.patterns),
        "admin": sorted(permissions.admin),
    }


def _history_reply(state: StateDictionary, versions: list[KeyVersion]) -> Reply:
    retention = state.history_retention
    return {
        "versions": [_version_reply(version) for version in versions],
        "retention": {"versions": retention.versions, "age": retention.age},
        "revision": state.revision,
    }


def _version_reply(version: KeyVersion) -> dict[str, Any]:
    """A history entry on the wire (``by`` is ``<session id>:<identity>`` for a session's
    change, ``EXPIRY`` or ``SESSION_END`` for the state's own removals)."""
    reply: dict[str, Any] = {"revision": version.revision, "time": version.time, "by": version.by}
    if version.removed:
        reply["removed"] = True
    else:
        reply["value"] = version.value
    return reply


def _add_time_left(facts: dict[str, list[float]], expiring: dict[str, float]) -> None:
    for key, left in expiring.items():
        if key in facts:
            facts[key].append(left)


def _facts_reply(
    keys: dict[str, Any], facts: dict[str, KeyFacts], expiring: dict[str, float]
) -> dict[str, list[float]]:
    """``{key: [mod_revision, create_revision, version]}`` for the keys of a reply, with a
    fourth item, seconds left, for a key that expires."""
    reply: dict[str, list[float]] = {key: list(facts[key]) for key in keys}
    for key, left in expiring.items():
        reply[key].append(left)
    return reply


def _bool_arg(message: dict[str, Any], op: str, name: str) -> bool:
    value = message.get(name, True)
    if type(value) is not bool:
        raise TypeError(f"{op}: {name!r} must be a bool, got {_describe(value)}")
    return value


def _list_arg(message: dict[str, Any], op: str, name: str, default: Any = None) -> list[Any]:
    value = message.get(name, default)
    if value is None:
        value = default
    if type(value) is not list:
        raise TypeError(f"{op}: {name!r} must be a list, got {_describe(value)}")
    return value


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"
