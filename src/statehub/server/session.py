"""A session of the statehub session protocol, independent of any transport.

A transport feeds each frame it reads to ``Session.receive`` and writes each frame
``Session.next_frame`` returns, until it returns None; when the connection is gone it
calls ``Session.close``, which releases everything the session held. The session knows
nothing of gRPC (or of WebSocket, later): it speaks in frames of bytes and exceptions.

Requests are handled in the order they arrive, but a ``lock`` that has to wait and a
``call`` run as tasks, so they never hold up the requests behind them: replies may come
out of order and are matched by id (see ``docs/protocol.md``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from statehub.core.buffers import DictionaryChangeBuffer
from statehub.core.change import DictionaryChange
from statehub.core.commands import CommandRegistry
from statehub.core.pacing import Pacer
from statehub.core.rwlock import LockTable
from statehub.core.state_dictionary import StateDictionary
from statehub.core.values import check_key
from statehub.errors import ObjectFrozenError, StatehubError
from statehub.protocol.codec import decode_batch, encode_batch
from statehub.protocol.errors import (
    MessageTooLargeError,
    ProtocolError,
    RequestCancelled,
    error_to_wire,
    status_of,
)

logger = logging.getLogger(__name__)

#: Replies and change batches waiting to be written, above which ``receive`` waits for
#: the transport to catch up (a client that sends without reading is slowed down).
HIGH_WATER_MESSAGES = 10_000

Reply = dict[str, Any]


class Hub:
    """What every session of one server shares: state, locks, commands, limits.

    It also counts the live sessions of each access token, so that a token's leases are
    released when its last session ends (two sessions may share a token).
    """

    def __init__(
        self,
        *,
        state: StateDictionary,
        locks: LockTable,
        commands: CommandRegistry,
        max_message_bytes: int,
        keepalive_s: float,
        min_interval: float = 0.0,
    ) -> None:
        self.state = state
        self.locks = locks
        self.commands = commands
        self.max_message_bytes = max_message_bytes
        self.keepalive_s = keepalive_s
        self.min_interval = min_interval
        self.sessions: set[Session] = set()
        self._token_sessions: Counter[str] = Counter()

    def token_joined(self, token: str) -> None:
        self._token_sessions[token] += 1

    def token_left(self, token: str) -> None:
        self._token_sessions[token] -= 1
        if self._token_sessions[token] <= 0:
            del self._token_sessions[token]
            self.state.release_owner(token)

    def end_sessions(self) -> None:
        """Ask every session to end once its pending frames are written (server stopping)."""
        for session in list(self.sessions):
            session.end()


class Session:
    """One connected client: its token, leases, read/write locks, subscriptions, requests."""

    def __init__(self, hub: Hub, *, peer: str = "") -> None:
        self.hub = hub
        self.peer = peer
        self.id = uuid.uuid4().hex
        self.token: str | None = None
        self.client = ""
        self._outbox: list[Reply] = []
        self._frames: deque[bytes] = deque()
        self._outbox_ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._ending = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[int, asyncio.Task[None]] = {}  # requests still running, by id
        self._cancelled_by_client: set[int] = set()
        self._subscriptions: dict[int, asyncio.Task[None]] = {}
        self._next_sub = 1
        self._lock_owners: set[tuple[str, Hashable]] = set()
        self._ops: dict[str, Callable[[dict[str, Any]], Reply | Awaitable[Reply]]] = {
            "hello": self._hello,
            "get": self._get,
            "update": self._update,
            "leases": self._leases,
            "list_leases": self._list_leases,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "unlock": self._unlock,
            "test_lock": self._test_lock,
            "commands": self._commands,
            "ping": self._ping,
            "cancel": self._cancel,
            "lock": self._lock,
            "call": self._call,
        }
        hub.sessions.add(self)

    # -- the transport's side ------------------------------------------------------------

    async def receive(self, frame: bytes) -> None:
        """Handle one frame from the client.

        Raises ``ProtocolError`` if the frame cannot be decoded: the transport should end
        the connection with that error, since no reply can name the requests it held.
        """
        if self._closed:
            return
        messages = decode_batch(frame, strict_map_key=False)
        limit = self.hub.max_message_bytes
        if len(frame) > limit:
            error = MessageTooLargeError(
                f"a frame of {len(frame)} bytes is over the limit of {limit} bytes "
                "(max_message_bytes); none of its requests was carried out"
            )
            for message in messages:
                self._send_error(message.get("id"), error)
        else:
            for message in messages:
                self._dispatch(message)
        while len(self._outbox) > HIGH_WATER_MESSAGES and not self._closed:
            await self._drained.wait()

    async def next_frame(self) -> bytes | None:
        """The next frame to write; None once the session has ended and everything is out."""
        while not self._frames:
            if self._outbox:
                self._frames.extend(self._encode(self._outbox))
                self._outbox = []
                break
            if self._ending:
                return None
            self._outbox_ready.clear()
            await self._outbox_ready.wait()
        frame = self._frames.popleft()
        if not self._frames and not self._outbox:
            self._drained.set()
        return frame

    def end(self) -> None:
        """End the session once what is pending has been written (``next_frame`` -> None)."""
        self._ending = True
        self._outbox_ready.set()

    async def close(self) -> None:
        """The connection is gone: stop every task, release every lock and lease."""
        if self._closed:
            return
        self._closed = True
        self.end()
        self._drained.set()
        tasks = list(self._tasks)
        try:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        finally:
            for owner in self._lock_owners:
                self.hub.locks.release_owner(owner)
            self._lock_owners.clear()
            if self.token is not None:
                self.hub.token_left(self.token)
            self.hub.sessions.discard(self)
            logger.debug("session %s (%s, %s) closed", self.id, self.client, self.peer)

    # -- dispatch ------------------------------------------------------------------------

    def _dispatch(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        try:
            if type(request_id) is not int:
                raise ProtocolError(f"every request needs an int 'id', got {_describe(request_id)}")
            op = message.get("op")
            if op == "hello" and self.token is not None:
                raise ProtocolError("'hello' was already sent on this session")
            if op != "hello" and self.token is None:
                raise ProtocolError(f"the first request must be 'hello', got op {op!r}")
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                known = sorted(self._ops)
                raise ProtocolError(f"unknown op {op!r}; known ops: {', '.join(known)}")
            reply = handler(message)
            if isinstance(reply, dict):
                self._send({"id": request_id, "ok": reply})
            else:  # it has to wait (a lock, a command, durability): later requests don't
                task = self._spawn(self._reply_when_done(request_id, reply))
                self._waiting[request_id] = task
                task.add_done_callback(lambda _: self._waiting.pop(request_id, None))
        except Exception as error:
            self._send_error(request_id, error)

    async def _reply_when_done(self, request_id: int, reply: Awaitable[Reply]) -> None:
        try:
            result = await reply
        except asyncio.CancelledError:
            if request_id not in self._cancelled_by_client:
                raise  # the session is closing
            self._cancelled_by_client.discard(request_id)
            self._send_error(request_id, RequestCancelled(f"request {request_id} cancelled"))
        except Exception as error:
            self._send_error(request_id, error)
        else:
            self._send({"id": request_id, "ok": result})

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _send(self, message: Reply) -> None:
        if self._closed:
            return
        self._outbox.append(message)
        self._drained.clear()
        self._outbox_ready.set()

    def _send_error(self, request_id: object, error: Exception) -> None:
        if not isinstance(error, StatehubError) and status_of(error) == "UNKNOWN":
            logger.error("session %s: unexpected error", self.id, exc_info=error)
        reply_id = request_id if type(request_id) is int else None
        self._send({"id": reply_id, "error": error_to_wire(error)})

    def _encode(self, messages: list[Reply]) -> list[bytes]:
        """Frames of at most ``max_message_bytes`` each, where that is possible."""
        limit = self.hub.max_message_bytes
        frame = encode_batch(messages)
        if len(frame) <= limit:
            return [frame]
        frames: list[bytes] = []
        group: list[Reply] = []
        group_size = 0
        for message in messages:
            for piece in self._pieces(message, limit):
                size = len(encode_batch([piece]))
                if group and group_size + size > limit:
                    frames.append(encode_batch(group))
                    group, group_size = [], 0
                group.append(piece)
                group_size += size
        if group:
            frames.append(encode_batch(group))
        return frames

    def _pieces(self, message: Reply, limit: int) -> list[Reply]:
        """``message``, split or replaced if it is alone over the size limit."""
        size = len(encode_batch([message]))
        if size <= limit:
            return [message]
        if "sub" in message:  # a change batch: split its keys; only the first is a snapshot
            return _split_change_batch(message, limit)
        return [
            {
                "id": message.get("id"),
                "error": error_to_wire(
                    MessageTooLargeError(
                        f"the reply is {size} bytes, over the limit of {limit} bytes "
                        "(max_message_bytes); ask for fewer keys"
                    )
                ),
            }
        ]

    # -- ops -----------------------------------------------------------------------------

    def _hello(self, message: dict[str, Any]) -> Reply:
        token = message.get("token")
        if token is not None and type(token) is not str:
            raise TypeError(f"hello: 'token' must be a str or None, got {_describe(token)}")
        client = message.get("client", "")
        if type(client) is not str:
            raise TypeError(f"hello: 'client' must be a str, got {_describe(client)}")
        self.token = token if token is not None else str(uuid.uuid4())
        self.client = client
        self.hub.token_joined(self.token)
        logger.debug("session %s: hello from %r at %s", self.id, client, self.peer)
        return {
            "session": self.id,
            "token": self.token,
            "revision": self.hub.state.revision,
            "epoch": self.hub.state.epoch,
            "keepalive_s": self.hub.keepalive_s,
            "max_message_bytes": self.hub.max_message_bytes,
        }

    def _get(self, message: dict[str, Any]) -> Reply:
        keys = message.get("keys")
        state = self.hub.state
        if keys is None:
            with state.views.lock:
                return {"values": state.copy_content(), "revision": state.revision}
        names = [check_key(key) for key in _list_arg(message, "get", "keys")]
        missing = object()
        values: dict[str, Any] = {}
        with state.views.lock:
            for key in names:
                value = state.get(key, missing)
                if value is not missing:
                    values[key] = value
            return {"values": values, "revision": state.revision}

    def _update(self, message: dict[str, Any]) -> Reply | Awaitable[Reply]:
        updates = message.get("updates")
        updates = {} if updates is None else updates
        if type(updates) is not dict:
            raise TypeError(f"update: 'updates' must be a map, got {_describe(updates)}")
        removals = [check_key(key) for key in _list_arg(message, "update", "removals", [])]
        state = self.hub.state
        revision = state.submit_update(self.token, DictionaryChange(updates, removals))
        if type(revision) is int and state.is_durable(revision):
            return {"revision": revision}
        return self._when_durable(revision)

    async def _when_durable(self, revision: int | Awaitable[int]) -> Reply:
        """Acknowledge a change only once committed and as durable as the store promises."""
        if not isinstance(revision, int):
            revision = await revision
        await self.hub.state.wait_durable_async(revision)
        return {"revision": revision}

    def _leases(self, message: dict[str, Any]) -> Reply:
        acquire = message.get("acquire")
        acquire = {} if acquire is None else acquire
        if type(acquire) is not dict:
            raise TypeError(f"leases: 'acquire' must be a map, got {_describe(acquire)}")
        release = _list_arg(message, "leases", "release", [])
        self.hub.state.update_locks(self.token, acquire, release)
        return {}

    def _list_leases(self, message: dict[str, Any]) -> Reply:
        return {
            "leases": [
                [lease.key, lease.owner == self.token, lease.seconds_left]
                for lease in self.hub.state.leases()
            ]
        }

    def _subscribe(self, message: dict[str, Any]) -> Reply:
        interval = message.get("interval", 0.0)
        if not _is_number(interval) or not 0 <= interval < math.inf:
            raise ValueError(
                "subscribe: 'interval' must be a finite number of seconds >= 0, "
                f"got {_describe(interval)}"
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
        sub = self._next_sub
        self._next_sub += 1
        task = self._spawn(self._run_subscription(sub, pacer, prefix, since))
        self._subscriptions[sub] = task
        task.add_done_callback(lambda _: self._subscriptions.pop(sub, None))
        return {"sub": sub}

    def _unsubscribe(self, message: dict[str, Any]) -> Reply:
        sub = message.get("sub")
        task = self._subscriptions.pop(sub, None) if type(sub) is int else None
        if task is None:
            raise KeyError(f"unsubscribe: no subscription {sub!r} on this session")
        task.cancel()
        return {}

    async def _lock(self, message: dict[str, Any]) -> Reply:
        key, exclusive, owner = self._lock_args(message, "lock")
        timeout = message.get("timeout")
        if timeout is not None:
            if not _is_number(timeout) or math.isnan(timeout) or timeout < 0:
                raise ValueError(
                    f"lock on {key!r}: 'timeout' must be a number of seconds >= 0 or None, "
                    f"got {_describe(timeout)}"
                )
            if math.isinf(timeout):
                timeout = None
        self._lock_owners.add(owner)
        fence = await self.hub.locks.acquire(key, owner, exclusive=exclusive, timeout=timeout)
        return {"fence": fence}

    def _unlock(self, message: dict[str, Any]) -> Reply:
        key, exclusive, owner = self._lock_args(message, "unlock")
        self.hub.locks.release(key, owner, exclusive=exclusive)
        return {}

    def _test_lock(self, message: dict[str, Any]) -> Reply:
        key = check_key(message.get("key"))
        exclusive = _bool_arg(message, "test_lock", "exclusive")
        return {"free": self.hub.locks.can_acquire(key, exclusive=exclusive)}

    async def _call(self, message: dict[str, Any]) -> Reply:
        name = message.get("name")
        if type(name) is not str:
            raise TypeError(f"call: 'name' must be a str, got {_describe(name)}")
        arguments = message.get("arguments")
        arguments = {} if arguments is None else arguments
        if type(arguments) is not dict:
            raise TypeError(f"call {name!r}: 'arguments' must be a map, got {_describe(arguments)}")
        return {"result": await self.hub.commands.run_async(name, arguments)}

    def _commands(self, message: dict[str, Any]) -> Reply:
        return {"commands": self.hub.commands.list()}

    def _ping(self, message: dict[str, Any]) -> Reply:
        return {}

    def _cancel(self, message: dict[str, Any]) -> Reply:
        """Stop a request that is still waiting: a lock wait leaves the queue, no trace."""
        target = message.get("request")
        if type(target) is not int:
            raise TypeError(f"cancel: 'request' must be an int id, got {_describe(target)}")
        task = self._waiting.get(target)
        if task is None:
            return {"cancelled": False}  # already answered (the reply is on its way)
        self._cancelled_by_client.add(target)
        task.cancel()
        return {"cancelled": True}

    def _lock_args(self, message: dict[str, Any], op: str) -> tuple[str, bool, tuple[str, str]]:
        key = check_key(message.get("key"))
        exclusive = _bool_arg(message, op, "exclusive")
        owner = message.get("owner", "")
        if type(owner) is not str:
            raise TypeError(f"{op} {key!r}: 'owner' must be a str, got {_describe(owner)}")
        return key, exclusive, (self.id, owner)

    # -- subscriptions -------------------------------------------------------------------

    async def _run_subscription(
        self, sub: int, pacer: Pacer, prefix: str, since: int | None
    ) -> None:
        with self.hub.state.get_change_buffer(since, prefix) as view:
            snapshot = view.starts_with_snapshot
            first = True
            while True:
                await asyncio.sleep(pacer.delay())
                await self._wait_drained()
                try:
                    change = _flush_now(view) if first else await view.flush_changed_async()
                except ObjectFrozenError:
                    return
                self._send(
                    {
                        "sub": sub,
                        "revision": view.cursor,
                        "snapshot": snapshot and first,
                        "updates": change.updates,
                        "removals": sorted(change.removals),
                    }
                )
                pacer.flushed()
                first = False

    async def _wait_drained(self) -> None:
        """Let the transport write what is queued before flushing more changes.

        Changes keep coalescing in the view meanwhile, so a slow reader gets fewer,
        larger batches instead of an ever longer queue.
        """
        while not self._drained.is_set():
            await self._drained.wait()


def _flush_now(view: DictionaryChangeBuffer) -> DictionaryChange:
    """What the view holds right now, possibly nothing (a subscription's first batch)."""
    try:
        return view.flush_changed_blocking(timeout=0)
    except TimeoutError:
        return DictionaryChange()


def _split_change_batch(message: Reply, limit: int) -> list[Reply]:
    pieces: list[Reply] = []
    piece: Reply = {**message, "updates": {}, "removals": []}
    budget = limit // 2  # leave room for the batch's own fields; keys are measured one by one
    size = 0
    entries: list[tuple[str, Any, bool]] = [
        *((key, value, False) for key, value in message["updates"].items()),
        *((key, None, True) for key in message["removals"]),
    ]
    for key, value, removed in entries:
        entry_size = len(encode_batch([{key: value}]))
        if size and size + entry_size > budget:
            pieces.append(piece)
            piece = {**message, "snapshot": False, "updates": {}, "removals": []}
            size = 0
        if removed:
            piece["removals"].append(key)
        else:
            piece["updates"][key] = value
        size += entry_size
    pieces.append(piece)
    return pieces


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


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
