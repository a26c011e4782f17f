"""NanoVer's current WebSocket protocol (binary msgpack maps) served from the same core.

What a NanoVer client sees (``docs/web.md``; the wire format is NanoVer's, see its
``websocket/server.py``): on connect a ``state`` snapshot, then coalesced deltas at most
every 1/30 s with both ``updates`` and ``removals``, its own writes included; its ``state``
messages applied atomically without acknowledgement; ``command`` requests answered with
``response`` or ``exception``; commands a client ``register``s forwarded to it. This
module only translates: writes, rights, the owner token and command listings are the
engine's (``server/operations``), so leases apply to NanoVer clients too and a write never
blocks the event loop, whatever the store; deltas come from a change view like every
subscription's. A user's keys (``avatar.<id>``...) are written as ephemeral keys of the
connection: they leave with it, by the same synchronous release as its leases.

Who the client is, is decided when it connects, as for every other connection: a bearer
token in the HTTP ``Authorization`` header, else the TLS client certificate's names, else
the anonymous role; a credential that does not authenticate closes the socket with 1008.
Each operation asks the connection's ``Principal`` (``docs/security.md``): writes need
the write right on every key, commands the call right, registering a command the admin
right ``register_commands``. Clients that may read every key share one stream, fed by the
server's fan-out engine (``server/subscriptions.py``) with NanoVer's encoding and 30 Hz
pacing; a client whose read right is narrower, or that fell behind, follows a view of its
own (filtered to what it may read) until it can join again.

Where NanoVer has gaps, this edge does better: bad input gets an ``{"error": ...}``
message (NanoVer's clients ignore unknown keys) and reading goes on; a forwarded command
whose registrant does not answer within ``forward_timeout`` fails with an exception; a
registration ends when its client disconnects. Frames that clients publish (simulation
runners) are merged and relayed to every client by ``nanover_frames.FrameRelay``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
from aiohttp import WSCloseCode, WSMsgType, web

from statehub.auth import (
    AdminRight,
    Credentials,
    PermissionDeniedError,
    PrefixSet,
    Principal,
    UnauthenticatedError,
)
from statehub.auth.context import current_principal
from statehub.core.buffers import DictionaryChangeBuffer
from statehub.core.change import DictionaryChange
from statehub.core.pacing import SteadyPacer
from statehub.errors import (
    LeaseLostError,
    LimitExceededError,
    ObjectFrozenError,
    ResourceLockedError,
    StatehubError,
)
from statehub.protocol.errors import status_of
from statehub.server.operations.commands import callable_only, may_call
from statehub.server.operations.copies import keys_to_drop
from statehub.server.operations.owner import owner_token
from statehub.server.operations.state import submit_write
from statehub.server.peer import Peer
from statehub.server.session import Hub
from statehub.server.subscriptions import FanoutGroup, FanoutGroups
from statehub.store.answers import Answer
from statehub.web.nanover_frames import FrameError, FrameRelay

logger = logging.getLogger(__name__)

#: NanoVer's ``state_interval``: deltas at most 30 times a second.
STATE_INTERVAL = 1 / 30
#: NanoVer's ``MAX_MESSAGE_SIZE`` (128 MiB) on both sides; larger messages close with 1009.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
#: NanoVer's command listing every command (served by ``StateServer``).
LIST_COMMANDS = "commands/list"
#: Seconds a forwarded command waits for the client that registered it.
DEFAULT_FORWARD_TIMEOUT = 30.0
#: Seconds a write to a client may wait for it to read before the server drops it
#: (1.5 x the keepalive, as aiohttp's ping: 15 s by default; the edge sets it).
DEFAULT_UNREAD_TIMEOUT = 15.0
#: WebSocket close reasons are limited to 123 bytes.
_MAX_CLOSE_REASON = 120
_AVATAR_PREFIX = "avatar."
_INTERACTION_PREFIX = "interaction."

NanoverMessage = dict[str, Any]


class NanoverStateMessages:
    """NanoVer's state delivery for the fan-out engine: a delta is one ``state`` message
    (updates and sorted removals), at most 30 a second on a steady clock."""

    interval = STATE_INTERVAL

    def encode(self, revision: int, change: DictionaryChange) -> list[bytes]:
        if not (change.updates or change.removals):
            return []
        return [_pack({"state": {"updates": change.updates, "removals": sorted(change.removals)}})]


NANOVER_STATE = NanoverStateMessages()


class NanoverObserver:
    """Told what NanoVer connections do (the web edge's metrics); does nothing here."""

    def nanover_received(self, size: int) -> None: ...

    def nanover_sent(self, size: int) -> None: ...

    def request_done(self, op: str, outcome: str) -> None: ...


class NanoverRoom:
    """What the NanoVer connections of one server share: client-registered commands.

    A registered command is added to the server's command registry too, so statehub
    session clients (and the dashboard) can run it; it leaves with its client.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        forward_timeout: float = DEFAULT_FORWARD_TIMEOUT,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        unread_timeout: float = DEFAULT_UNREAD_TIMEOUT,
    ) -> None:
        self.hub = hub
        self.forward_timeout = forward_timeout
        #: A client whose socket takes no bytes for this long is dropped.
        self.unread_timeout = unread_timeout
        self.connections: set[NanoverConnection] = set()
        #: Clients that may read every key share one 30 Hz stream: the server's fan-out
        #: engine, with NanoVer's encoding and pacing (the others follow views of their own).
        self.fanout: FanoutGroups[NanoverConnection] = FanoutGroups(hub, NANOVER_STATE)
        #: Told of bytes and commands, for metrics (the web edge sets it).
        self.observer: NanoverObserver = NanoverObserver()
        #: Frames published by simulation runners, relayed to every connection.
        self.frames = FrameRelay(max_message_bytes=max_message_bytes)
        self._registrants: dict[str, NanoverConnection] = {}
        self._presentation: dict[str, dict[str, str]] = {}
        hub.auth_listeners.append(self.reauthenticate)
        hub.state.holds_lost.add_callback(self.holds_lost)

    def register(
        self,
        name: str,
        connection: NanoverConnection,
        defaults: Mapping[str, Any],
        presentation: Mapping[str, str] | None = None,
    ) -> None:
        """Serve ``name`` by ``connection``; a later registration by anyone replaces it.

        ``presentation`` (NanoVer's ``label`` and ``icon``) goes into ``commands/list``.
        """
        commands = self.hub.commands
        previous = self._registrants.get(name)
        limit = self.hub.limits.max_registrations
        if previous is not connection and connection.registered >= limit:
            raise LimitExceededError(
                f"register {name!r}: this client already serves {connection.registered} "
                f"commands (max_registrations={limit})"
            )
        if previous is not None:
            commands.unregister(name)
            previous.registered -= 1
            del self._registrants[name]
        elif commands.registration(name) is not None:  # not ``.commands``: that is a copy
            raise ValueError(
                f"command {name!r} is served by the server itself; a client cannot take it over"
            )
        commands.register(name, self._forwarder(name), defaults)
        connection.registered += 1
        self._registrants[name] = connection
        self._presentation[name] = dict(presentation or {})

    def command_entries(self, listing: Mapping[str, Any]) -> list[dict[str, Any]]:
        """NanoVer's ``commands`` list (name, arguments, label, icon) for ``listing``."""
        return [
            {"name": name, "arguments": arguments, **self._presentation.get(name, {})}
            for name, arguments in listing.items()
        ]

    def registrant(self, name: str) -> NanoverConnection | None:
        return self._registrants.get(name)

    @property
    def in_step(self) -> frozenset[NanoverConnection]:
        """The connections the shared stream feeds."""
        return self.fanout.members()

    def enter(self, connection: NanoverConnection) -> None:
        """``connection`` is open (whichever way it is fed state)."""
        self.connections.add(connection)

    def reauthenticate(self) -> None:
        """The identities were replaced: check every connection's credential again."""
        for connection in list(self.connections):
            connection.reauthenticate()

    def holds_lost(self, **_: Any) -> None:
        """This server was cut off from the shared store and the other servers released
        what its connections held (``StateDictionary.holds_lost``): a NanoVer connection
        holds no lease, but its user's keys were bound to it and are gone; say so."""
        for connection in list(self.connections):
            connection.bound_keys_lost()

    async def close_all(self) -> None:
        """The server is stopping: close every NanoVer connection (1001, going away)."""
        self.hub.state.holds_lost.remove_callback(self.holds_lost)
        if self.reauthenticate in self.hub.auth_listeners:
            self.hub.auth_listeners.remove(self.reauthenticate)
        for connection in list(self.connections):
            await connection.socket.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
        await self.frames.close()

    def leave(self, connection: NanoverConnection) -> None:
        """``connection`` is going: no more state for it."""
        self.connections.discard(connection)
        connection.stop_sharing()

    def unregister_commands_of(self, connection: NanoverConnection) -> None:
        """``connection`` is gone: its registrations end with it."""
        for name, registrant in list(self._registrants.items()):
            if registrant is connection:
                connection.registered -= 1
                del self._registrants[name]
                self._presentation.pop(name, None)
                self.hub.commands.unregister(name)

    def _forwarder(self, name: str) -> Any:
        async def forward(**arguments: Any) -> dict[str, Any] | None:
            registrant = self._registrants.get(name)
            if registrant is None:
                raise KeyError(f"no command named {name!r}")
            result = await registrant.forward(name, arguments, self.forward_timeout)
            # statehub commands return a map or nothing; NanoVer's may return any value.
            return result if result is None or type(result) is dict else {"result": result}

        return forward


async def serve_nanover_socket(
    room: NanoverRoom,
    socket: web.WebSocketResponse,
    peer: Peer,
    transport: asyncio.Transport | None = None,
) -> None:
    """Serve one NanoVer client on a prepared ``socket`` as the identity it proves.

    A credential the server does not accept closes the socket at once with 1008 (policy
    violation) and a reason naming the problem, as a session is answered UNAUTHENTICATED.
    """
    credentials = Credentials(peer.bearer_token, peer.certificate_identities)
    try:
        principal = room.hub.auth.authenticate(credentials)
    except UnauthenticatedError as error:
        logger.info("NanoVer client %s refused: %s", peer.address, error)
        await socket.close(code=WSCloseCode.POLICY_VIOLATION, message=_close_reason(error))
        return
    connection = NanoverConnection(room, socket, peer, principal, credentials)
    connection.transport = transport
    await connection.run()


class NanoverConnection:
    """One NanoVer client on a WebSocket: its deltas, its writes, its commands."""

    def __init__(
        self,
        room: NanoverRoom,
        socket: web.WebSocketResponse,
        peer: Peer,
        principal: Principal,
        credentials: Credentials,
    ) -> None:
        self.room = room
        self.hub = room.hub
        self.socket = socket
        self.peer = peer
        #: Who the client is; replaced when the identities are reloaded.
        self.principal = principal
        #: What it presented on connect, authenticated again at each reload.
        self.credentials = credentials
        #: The owner of its leases and of its user's keys: this connection, as this identity.
        self.token = owner_token(f"nanover-ws/{uuid.uuid4().hex}", principal.name)
        #: Fixed by the first ``avatar.<id>`` key the client writes (as NanoVer does).
        self.user_id: str | None = None
        self._write_lock = asyncio.Lock()
        self._forward_ids = itertools.count(1)
        self._forwards: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: The revision of the last state message queued for this client.
        self._revision_sent = 0
        #: The revision of the last state message written to it (never above the one sent).
        self._revision_delivered = 0
        #: The read rights its copy of the state may hold keys of: the current ones, and
        #: earlier ones until a fresh copy under the current ones has been written.
        self._shown: list[PrefixSet] = []
        #: Every task that sends it state (its snapshot, shared deltas, its own view).
        self._state_tasks: set[asyncio.Task[None]] = set()
        #: The task writing a state message now, if any: a shared delta waits for none.
        self._state_writer: asyncio.Task[None] | None = None
        #: The fan-out group feeding it shared deltas, while it is in one.
        self._group: FanoutGroup[NanoverConnection] | None = None
        #: The connection under the socket: aborted to drop a client that does not read.
        self.transport: asyncio.Transport | None = None
        #: Set once a reload found its credential no longer accepted: it is being closed.
        self._ending = False
        #: Commands it serves now (``NanoverRoom.register`` keeps the count).
        self.registered = 0
        #: Its command requests still running: at most ``max_pending_requests``.
        self._pending_commands = 0
        #: The task answering requests refused over the limit, if any.
        self._refusing: asyncio.Task[None] | None = None
        #: Bytes of messages waiting to be written to it (the one being written excluded).
        self._waiting_bytes = 0

    async def run(self) -> None:
        """Serve the client until it goes; then clean up after it exactly once."""
        self.room.enter(self)
        self._restart_state()
        self.room.frames.subscribe(self, self._send_packed)
        try:
            async for message in self.socket:
                if message.type is WSMsgType.BINARY:
                    self.room.observer.nanover_received(len(message.data))
                    self._handle(message.data)
                    if self._refusing is not None:
                        # Backpressure: its next message is read once these are written.
                        await asyncio.wait([self._refusing])
                        self._refusing = None
                    # aiohttp hands over buffered messages without yielding: one loop turn
                    # per message lets the commands it started begin, in order, and gives
                    # every other client its turn between two writes of a fast writer.
                    await asyncio.sleep(0)
                elif message.type is WSMsgType.TEXT:
                    await self._report_error(
                        "ProtocolError",
                        "NanoVer messages are binary msgpack maps; got a text message",
                    )
                elif message.type is WSMsgType.ERROR:
                    break
        except ConnectionResetError:
            pass
        finally:
            self._leave()
            tasks = list(self._tasks)
            if tasks:
                await asyncio.wait(tasks)
            await self.socket.close()

    def _leave(self) -> None:
        """Release everything the client held, at once: synchronous, so that nothing can
        interrupt it half-way (as ``transport.serve_session`` closes a session). Its leases
        go and the keys it wrote as its user's (ephemeral, see ``_user_keys``) are removed,
        in one change, by ``release_owner``; then those others wrote for its user."""
        self.room.frames.unsubscribe(self)
        self.room.leave(self)
        for task in self._tasks:
            task.cancel()
        for future in self._forwards.values():
            future.cancel()
        self.room.unregister_commands_of(self)
        self.hub.state.release_owner(self.token)
        self._remove_keys_written_for_user()

    def bound_keys_lost(self) -> None:
        """The other servers swept this cut-off server: the keys bound to this connection
        (its user's) were removed by them. Logged, and told to a client that had some, as
        an ``error`` (``LeaseLostError``): its next write of them binds them again."""
        if self.user_id is None or self.socket.closed:
            return
        message = (
            f"this server was cut off from the shared store and the other servers removed "
            f"the keys bound to this connection (user {self.user_id!r}); write them again"
        )
        logger.warning("NanoVer client %s: %s", self.peer.address, message)
        self._spawn(self._send({"error": {"type": LeaseLostError.__name__, "message": message}}))

    def _remove_keys_written_for_user(self) -> None:
        """Remove the user's keys that others wrote for it (``user-origin.<id>``, written
        by the server's ``multiuser/radially-orient-origins``), as NanoVer does when its
        client leaves: those are bound to whoever wrote them, not to this connection.
        Keys it may not write, and those leased by someone else, are left alone."""
        user = self.user_id
        if user is None:
            return
        writable = self.principal.permissions.write
        _, content = self.hub.state.shared_values()  # read only: no copy per leaving client
        owned = [
            key for key, value in content.items() if _owned(key, value, user) and key in writable
        ]
        while owned:
            try:
                removing = submit_write(
                    self.hub.state, self.principal, self.token, {}, owned, op="NanoVer leave"
                )
                if removing.done():  # an in-process store: its refusal is known now
                    removing.result()
            except ResourceLockedError as error:  # leased by someone else: theirs to keep
                owned = [key for key in owned if key not in error.keys]
                continue
            except ObjectFrozenError:  # the server is stopping
                return
            removing.add_done_callback(self._log_leave_failure)
            return

    def _log_leave_failure(self, done: Answer[int]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            logger.warning("NanoVer client %s: its user's keys stay: %s", self.peer.address, error)

    # -- incoming ------------------------------------------------------------------------

    def _handle(self, data: bytes) -> None:
        limit = self.hub.limits.max_pending_requests
        # A payload takes at least one byte: only a message longer than the limit can
        # hold too many. Counted from the headers before anything is decoded, since
        # decoding 80,000 payloads only to refuse them held the loop for 0.1-0.4 s.
        if len(data) > limit and (count := _command_count(data)) > limit:
            self._spawn(
                self._report_error(
                    LimitExceededError.__name__,
                    f"a message with {count} command payloads is over the limit of "
                    f"{limit} per message (max_pending_requests); it was refused whole",
                )
            )
            return
        try:
            message = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as error:
            self._spawn(self._report_error("ProtocolError", f"not a msgpack message: {error}"))
            return
        if type(message) is not dict:
            self._spawn(
                self._report_error(
                    "ProtocolError",
                    f"a NanoVer message is a map with 'state', 'command' or 'frame', "
                    f"got {type(message).__name__}",
                )
            )
            return
        if "state" in message:
            self._apply_state(message["state"])
        if "command" in message:
            payloads = message["command"]
            payloads = payloads if type(payloads) is list else [payloads]
            refused: list[object] = []
            for payload in payloads:
                self._command(payload, refused)
            if refused:  # one task answers them all, not one task each
                self._refusing = self._spawn(self._refuse_requests(refused))
        if "frame" in message:  # a simulation runner publishing: see nanover_frames.py
            try:
                self.room.frames.publish(message["frame"])
            except FrameError as error:
                self._spawn(self._report_error("ProtocolError", f"frame not relayed: {error}"))

    def _apply_state(self, state: object) -> None:
        """Commit a ``state`` message without waiting for the store (no acknowledgement,
        as in NanoVer): with an in-process store it is applied before the next message is
        read; with Redis the store commits the messages in the order they came."""
        try:
            if type(state) is not dict:
                raise TypeError(f"'state' must be a map, got {type(state).__name__}")
            updates = state.get("updates") or {}
            removals = state.get("removals") or []
            if type(updates) is not dict:
                raise TypeError(f"state 'updates' must be a map, got {type(updates).__name__}")
            if type(removals) is not list:
                raise TypeError(f"state 'removals' must be a list, got {type(removals).__name__}")
            removed = set(removals)
            # NanoVer applies updates then removals: a key in both ends up removed.
            kept = {key: value for key, value in updates.items() if key not in removed}
            self._note_user(updates)
            submitted = submit_write(
                self.hub.state,
                self.principal,
                self.token,
                kept,
                removals,
                op="NanoVer state",
                ephemeral=self._user_keys(kept),
            )
        except Exception as error:
            self._state_refused(error, state)
            return

        def settled(done: Answer[int]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is None:
                self.room.observer.request_done("nanover:state", "ok")
            elif isinstance(error, Exception):
                self._state_refused(error, state)

        if submitted.done():  # an in-process store: answered now, not a loop turn later
            settled(submitted)
        else:
            submitted.add_done_callback(settled)

    def _state_refused(self, error: Exception, state: object) -> None:
        """Tell the client why its ``state`` message was not applied (nothing of it was)."""
        self.room.observer.request_done("nanover:state", status_of(error))
        if isinstance(error, ObjectFrozenError) or self.socket.closed:
            return  # the server is stopping, or the client left: no one to tell
        if isinstance(error, ResourceLockedError):
            self._spawn(self._refused(error, error.keys))
        elif isinstance(error, (TypeError, ValueError)):
            # A value statehub cannot carry (bytes, over a limit: docs/limits.md). The keys
            # the message names get their current values back, so a client that applied
            # its write locally (the XR client) converges instead of silently diverging.
            self._spawn(self._refused(error, _named_keys(state)))
        else:  # no right, the store unavailable or not durable: said, and reading goes on
            if not isinstance(error, StatehubError):
                logger.error("NanoVer client %s: state failed", self.peer, exc_info=error)
            self._spawn(self._report_error(type(error).__name__, f"state not applied: {error}"))

    def _user_keys(self, updates: Mapping[str, Any]) -> list[str]:
        """The keys of ``updates`` that are the user's: written as ephemeral, so they leave
        with this connection (as NanoVer removes a leaving user's keys).

        A key is the user's if it holds ``.<id>`` ending at a dot or at its end, after its
        first part (``avatar.<id>``, ``update.index.<id>``, ``selection.<id>.2``; ids may
        hold dots: ``avatar.a.b`` is user ``a.b``'s), or if it is an ``interaction.*`` whose
        ``owner.id`` is the user. NanoVer tests ``.<id>`` as a plain substring, which also
        takes ``x.<id>suffix`` keys of other users (and, for the id ``""``, every key with
        a dot); this does not. A user's key written by another client is bound to no one
        (the last writer's write decides, as for any ephemeral key).
        """
        user = self.user_id
        if user is None:
            return []
        return [key for key, value in updates.items() if _owned(key, value, user)]

    def _note_user(self, updates: dict[Any, Any]) -> None:
        if self.user_id is not None:
            return
        for key in updates:
            if type(key) is str and key.startswith(_AVATAR_PREFIX):
                self.user_id = key[len(_AVATAR_PREFIX) :]
                return

    async def _refused(self, error: Exception, keys: Iterable[str]) -> None:
        """Tell the writer, and send the current values of ``keys`` so its copy converges
        (those it may read: the others are not in its copy)."""
        await self._report_error(type(error).__name__, f"state not applied: {error}")
        current: dict[str, Any] = {}
        absent: list[str] = []
        readable = self.principal.permissions.read
        for key in sorted(key for key in set(keys) if key in readable):
            value = self.hub.state.get(key, _MISSING)
            if value is _MISSING:
                absent.append(key)
            else:
                current[key] = value
        if current or absent:
            await self._send({"state": {"updates": current, "removals": absent}})

    def _command(self, payload: object, refused: list[object]) -> None:
        if type(payload) is not dict:
            self._spawn(self._report_error("ProtocolError", "a command payload must be a map"))
            return
        if "register" in payload:
            self._register(payload["register"])
        elif "exception" in payload or "response" in payload:
            self._answer_forward(payload)
        elif self._pending_commands >= self.hub.limits.max_pending_requests:
            # The session protocol's rule and limit (SessionLimits.max_pending_requests).
            refused.append(payload.get("request"))
        else:
            self._pending_commands += 1
            self._spawn(self._run_request(payload.get("request")))

    def _register(self, registration: object) -> None:
        try:
            if type(registration) is not dict or type(registration.get("name")) is not str:
                raise TypeError("'register' needs a map with a str 'name'")
            defaults = registration.get("arguments") or {}
            if type(defaults) is not dict:
                raise TypeError(f"register {registration['name']!r}: 'arguments' must be a map")
            presentation = {
                field: registration[field]
                for field in ("label", "icon")
                if type(registration.get(field)) is str
            }
            self.principal.require_admin(
                AdminRight.REGISTER_COMMANDS, f"register {registration['name']!r}"
            )
            self.room.register(registration["name"], self, defaults, presentation)
        except (TypeError, ValueError, PermissionDeniedError, LimitExceededError) as error:
            self._spawn(self._report_error(type(error).__name__, f"not registered: {error}"))

    def _answer_forward(self, payload: dict[str, Any]) -> None:
        request = payload.get("request")
        forward_id = request.get("id") if type(request) is dict else None
        future = self._forwards.pop(forward_id, None) if type(forward_id) is int else None
        if future is None:
            self._spawn(
                self._report_error(
                    "ProtocolError",
                    f"a command reply for request id {forward_id!r}, which is not waiting "
                    "for one (answered already, timed out, or never sent)",
                )
            )
            return
        if future.done():
            return
        if "exception" in payload:
            future.set_exception(RuntimeError(str(payload["exception"])))
        else:
            future.set_result(payload.get("response"))

    async def _refuse_requests(self, requests: list[object]) -> None:
        limit = self.hub.limits.max_pending_requests
        exception = (
            f"{LimitExceededError.__name__}: this client already has {limit} commands running "
            f"(max_pending_requests={limit})"
        )
        for start in range(0, len(requests), 100):
            # One batch's replies under one hold of the write lock: no hand-over per reply.
            async with self._write_lock:
                for request in requests[start : start + 100]:
                    self.room.observer.request_done("nanover:command", "RESOURCE_EXHAUSTED")
                    data = _pack({"command": {"request": request, "exception": exception}})
                    if not await self._write(data):
                        return
            await asyncio.sleep(0)  # the others' turn

    async def _run_request(self, request: object) -> None:
        try:
            await self._run_request_counted(request)
        finally:
            self._pending_commands -= 1

    async def _run_request_counted(self, request: object) -> None:
        if type(request) is not dict:
            await self._report_error("ProtocolError", "a command needs a 'request' map")
            return
        reply: NanoverMessage = {"request": request}
        try:
            name = request.get("name")
            arguments = request.get("arguments") or {}
            if type(name) is not str:
                raise TypeError(f"a command request needs a str 'name', got {name!r}")
            if type(arguments) is not dict:
                raise TypeError(f"command {name!r}: 'arguments' must be a map")
            if name == LIST_COMMANDS:  # a listing, filtered to what this identity may call
                current_principal.set(self.principal)
            else:
                may_call(self.principal, name, "NanoVer command")
            registrant = self.room.registrant(name)
            if registrant is not None:  # NanoVer to NanoVer: the value goes through as is
                registration = self.hub.commands.registration(name)
                defaults = registration.default_arguments if registration else {}
                merged = {**defaults, **arguments}
                reply["response"] = await registrant.forward(
                    name, merged, self.room.forward_timeout
                )
            else:
                response = await self.hub.commands.run_async(name, arguments)
                if name == LIST_COMMANDS and response is not None:
                    # NanoVer's listing also has a "commands" list with labels and icons.
                    listing = response.get("list")
                    if type(listing) is dict:
                        listing = callable_only(listing, self.principal)
                        response["list"] = listing
                        response["commands"] = self.room.command_entries(listing)
                reply["response"] = response
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reply["exception"] = _exception_text(error)
            self.room.observer.request_done("nanover:command", status_of(error))
        else:
            self.room.observer.request_done("nanover:command", "ok")
        await self._send({"command": reply})

    async def forward(self, name: str, arguments: dict[str, Any], timeout: float) -> Any:
        """Run ``name`` on this client (it registered it); its answer, or an exception."""
        forward_id = next(self._forward_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._forwards[forward_id] = future
        request = {"name": name, "arguments": arguments, "id": forward_id}
        try:
            await self._send({"command": {"request": request}})
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise TimeoutError(
                f"command {name!r}: the client that registered it did not answer within {timeout} s"
            ) from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if future.cancelled() and not (current and current.cancelling()):
                # the registrant left while we waited; we were not cancelled ourselves
                raise ConnectionError(
                    f"command {name!r}: the client that registered it disconnected"
                ) from None
            raise
        finally:
            self._forwards.pop(forward_id, None)

    # -- outgoing ------------------------------------------------------------------------

    def _restart_state(self) -> None:
        """Send a fresh copy of the keys the client may read, then follow their changes.

        On connect that is the whole state it may read (nothing if that is empty); after a
        reload that changed its read rights, the same plus the removal of every key its
        copy may hold that the new rights do not show. A client that may read every key
        then joins the shared stream (the server's fan-out engine): the snapshot and
        joining happen without yielding in between, so the first shared delta is the one
        after the snapshot's revision. Any other client follows a view of its own,
        filtered to its keys.
        """
        self.stop_sharing()
        for task in self._state_tasks:
            task.cancel()
        readable = self.principal.permissions.read
        key_filter = None if readable.everything else readable.__contains__
        with self.hub.state.get_change_buffer(None, "", key_filter) as view:
            snapshot = _flush_now(view, copy=False)
            revision = view.cursor
            joined = key_filter is None and self._join(view)
        removals = self._dropped(snapshot.updates)
        self._shown.append(readable)
        self._revision_sent = revision
        message = {"state": {"updates": snapshot.updates, "removals": removals}}
        if joined:
            self._state_writer = self._spawn_state(self._send_fresh_copy(message, revision))
        else:
            self._spawn_state(self._send_fresh_copy(message, revision, follow=True))

    def _join(self, view: DictionaryChangeBuffer) -> bool:
        """Join the shared stream from ``view`` (caught up, everything readable) if it can."""
        self._group = self.room.fanout.join(self, view, "", self.principal.permissions.read)
        return self._group is not None

    def stop_sharing(self) -> None:
        """No more shared deltas for this connection (it leaves, or follows its own view)."""
        if self._group is not None:
            group, self._group = self._group, None
            group.discard(self)

    def _dropped(self, kept: Mapping[str, Any]) -> list[str]:
        """Keys the client's copy may hold and a fresh copy of ``kept`` does not have.

        Those are the keys its earlier rights showed that are in the state now, and those
        removed since the last state message it was written.
        """
        return sorted(keys_to_drop(self.hub.state, self._shown, self._revision_delivered, kept))

    async def _send_fresh_copy(
        self, message: NanoverMessage, revision: int, *, follow: bool = False
    ) -> None:
        state = message["state"]
        if state["updates"] or state["removals"]:
            await self._send(message)
        self._revision_delivered = revision
        self._shown = self._shown[-1:]  # its copy now holds only what these rights show
        if follow:
            await self._send_state(revision)

    def offer(self, bodies: list[bytes], since: int, revision: int) -> bool:
        """A shared delta (``FanoutGroup``): written unless the previous state message is
        still being written (False: it leaves the shared stream and catches up alone)."""
        if self._state_writer is not None and not self._state_writer.done():
            return False
        self._revision_sent = revision
        if bodies:
            self._state_writer = self._spawn_state(self._send_shared(bodies[0], revision))
        return True

    def left(self, resume_from: int | None) -> None:
        """Out of the shared stream: follow a view of our own from the last revision sent
        (None: the state ended, nothing more to follow)."""
        self._group = None
        if resume_from is not None and not self.socket.closed:
            self._spawn_state(self._send_state(resume_from))

    async def _send_shared(self, data: bytes, revision: int) -> None:
        await self._send_packed(data)
        self._revision_delivered = revision

    async def _send_state(self, since: int) -> None:
        """Coalesced deltas of readable keys after ``since``, at most 30 Hz, at this
        client's own pace; a client that may read every key goes back to the shared
        stream as soon as it has caught up with it."""
        readable = self.principal.permissions.read
        key_filter = None if readable.everything else readable.__contains__
        pacer = SteadyPacer(STATE_INTERVAL)
        with self.hub.state.get_change_buffer(since, "", key_filter) as view:
            first = True
            while True:
                await asyncio.sleep(pacer.delay())
                try:
                    change = (
                        _flush_now(view, copy=False)
                        if first
                        else await view.flush_changed_async(copy=False)
                    )
                except ObjectFrozenError:
                    return
                first = False
                if not (change.updates or change.removals):
                    continue
                revision = self._revision_sent = view.cursor
                await self._send_packed(NANOVER_STATE.encode(revision, change)[0])
                self._revision_delivered = revision
                pacer.flushed()
                if key_filter is None and self._join(view):
                    return

    def reauthenticate(self) -> None:
        """After the identities changed: keep the rights the credential now has, or end.

        If its read rights changed, the client gets a fresh copy (``_restart_state``); if
        it may no longer register commands, those it registered end.
        """
        if self.socket.closed or self._ending:
            return
        try:
            principal = self.hub.auth.authenticate(self.credentials)
        except UnauthenticatedError as error:
            logger.info(
                "NanoVer client %s (%s) ended: %s", self.peer.address, self.principal.name, error
            )
            self._ending = True
            self._spawn(self._end(error))
            return
        previous, self.principal = self.principal, principal
        if AdminRight.REGISTER_COMMANDS not in principal.permissions.admin:
            self.room.unregister_commands_of(self)  # it may no longer serve commands
        if principal.permissions.read != previous.permissions.read:
            self._restart_state()

    async def _end(self, error: UnauthenticatedError) -> None:
        """Say why, then close with 1008 (policy violation); cleanup follows in ``run``."""
        self.stop_sharing()
        for task in self._state_tasks:
            task.cancel()
        await self._report_error(type(error).__name__, str(error))
        await self.socket.close(code=WSCloseCode.POLICY_VIOLATION, message=_close_reason(error))

    async def _report_error(self, kind: str, message: str) -> None:
        logger.info("NanoVer client %s: %s", self.peer.address, message)
        await self._send({"error": {"type": kind, "message": message}})

    async def _send(self, message: NanoverMessage) -> None:
        await self._send_packed(_pack(message))

    async def _send_packed(self, data: bytes) -> None:
        """Write ``data`` after what is already waiting; drop a client that does not read.

        Bounded per client: when what waits behind the message being written would go
        over ``max_queued_bytes`` (the session protocol's limit), or a write makes no
        progress for ``unread_timeout`` seconds, the client is dropped (its leases and
        registrations end with it, in ``run``), as TCP drops a peer that stops reading.
        """
        if self.socket.closed:
            return
        size = len(data)
        if self._write_lock.locked():
            limit = self.hub.limits.max_queued_bytes
            if self._waiting_bytes + size > limit:
                self._drop(f"over {limit} bytes wait unread for it (max_queued_bytes): dropped")
                return
        self._waiting_bytes += size
        try:
            async with self._write_lock:
                self._waiting_bytes -= size
                size = 0
                await self._write(data)
        finally:
            self._waiting_bytes -= size

    async def _write(self, data: bytes) -> bool:
        """Write ``data`` (the write lock held); False if the client is gone or dropped."""
        if self.socket.closed:
            return False
        try:
            async with asyncio.timeout(self.room.unread_timeout):
                await self.socket.send_bytes(data)
        except TimeoutError:
            self._drop(f"it read nothing for {self.room.unread_timeout} s: dropped")
            return False
        except ConnectionResetError:  # the client is gone; the read loop ends with it
            return False
        self.room.observer.nanover_sent(len(data))
        return True

    def _drop(self, why: str) -> None:
        """End a client that does not read: abort its connection (a close frame would
        wait behind what it does not read); ``run`` then cleans up after it."""
        logger.info("NanoVer client %s: %s", self.peer.address, why)
        if self.transport is not None:
            self.transport.abort()

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _spawn_state(self, coroutine: Any) -> asyncio.Task[None]:
        task = self._spawn(coroutine)
        self._state_tasks.add(task)
        task.add_done_callback(self._state_tasks.discard)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("NanoVer client %s: task failed", self.peer, exc_info=task.exception())


_MISSING = object()


def _named_keys(state: object) -> list[str]:
    """The str keys a ``state`` message names (updates and removals), if it is a map."""
    if type(state) is not dict:
        return []
    named: list[Any] = []
    for field in ("updates", "removals"):
        part = state.get(field)
        if isinstance(part, (dict, list)):
            named.extend(part)
    return [key for key in named if type(key) is str]


def _owned(key: str, value: object, user: str) -> bool:
    if f".{user}." in f"{key}.":
        return True
    return (
        key.startswith(_INTERACTION_PREFIX)
        and type(value) is dict
        and value.get("owner.id") == user
    )


def _flush_now(view: DictionaryChangeBuffer, *, copy: bool = True) -> DictionaryChange:
    try:
        return view.flush_changed_blocking(timeout=0, copy=copy)
    except TimeoutError:
        return DictionaryChange()


def _close_reason(error: Exception) -> bytes:
    return str(error).encode()[:_MAX_CLOSE_REASON]


def _exception_text(error: Exception) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])  # not repr-quoted as str(KeyError) is
    return str(error)


def _pack(message: NanoverMessage) -> bytes:
    try:
        return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]
    except OverflowError:  # statehub ints may exceed msgpack's 64 bits; NanoVer's may not
        return msgpack.packb(_without_big_ints(message), use_bin_type=True)  # type: ignore[no-any-return]


def _without_big_ints(value: Any) -> Any:
    if type(value) is int and not -(2**63) <= value < 2**64:
        try:
            return float(value)
        except OverflowError:
            return str(value)
    if type(value) is dict:
        return {key: _without_big_ints(item) for key, item in value.items()}
    if type(value) is list:
        return [_without_big_ints(item) for item in value]
    return value


def _command_count(data: bytes) -> int:
    """How many command payloads the NanoVer message ``data`` holds (a single payload
    counts one), read from its msgpack headers: the other values are skipped, not
    built. 0 if it is not a map with a ``command`` (the full decode says what is wrong)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(data))
    unpacker.feed(data)
    try:
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() != "command":
                unpacker.skip()
                continue
            try:
                return int(unpacker.read_array_header())
            except ValueError:  # not a list: one payload
                return 1
    except (ValueError, msgpack.UnpackException):
        return 0
    return 0
