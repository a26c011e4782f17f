"""One session over a plain TCP socket, driven by the threads that call it (no event loop).

The blocking ``Client`` talks to a ``statehub+tcp://`` server through this, as redis-py
does: a call encodes its request, writes it, and reads the reply in the caller's own
thread. There is no hop to a background thread and back, which is most of what a call
cost when every call went through an event loop in another thread.

Several threads may call at once. Whoever waits for a reply and finds nobody reading
becomes the reader (leader/follower): it reads frames, hands each reply to the thread
waiting for it and each change batch to its subscription's handler, until its own reply
is in; then another waiting thread takes over. While there are subscriptions a helper
thread keeps reading even when nobody calls (so handlers run without a call), and
reconnects with backoff and resubscribes after the connection drops. Without
subscriptions, a lost connection is reopened by the next call (or ``wait_connected``).

The server pings a connection it has not heard from for its keepalive and drops it when
nothing comes back within the keepalive timeout (``server/heartbeat.py``). Whoever reads
answers the ping. A session that holds something the server would release on a drop (a
lease, a read/write lock, a key bound with ``ephemeral``) therefore keeps the helper
thread reading until it ends, however idle the caller's threads are. A session holding
nothing is left alone: if the server dropped it meanwhile, the next call notices (it
reads what came first when the server has been silent for a keepalive) and opens a new
session, and a call the server refused with ``HeartbeatTimeoutError`` (it never ran) is
sent once more on the new session.

A call that gets no answer within its timeout raises statehub's ``TimeoutError`` and
leaves no trace: its reply will be dropped and the server is asked to stop the request;
a lock request instead keeps a hook that gives a late grant straight back.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from statehub.client.hello import DEFAULT_MAX_MESSAGE_BYTES, hello_message, welcome_from
from statehub.client.subscription import BatchHandler, Message, Subscription
from statehub.client.timeouts import timed_out
from statehub.errors import (
    ConnectionLostError,
    HeartbeatTimeoutError,
    MessageTooLargeError,
    ProtocolError,
)
from statehub.protocol import decode_batch, encode_batch, error_from_wire
from statehub.protocol.tcp_framing import (
    LENGTH_BYTES,
    MAX_SERVER_FRAME,
    encode_length,
    set_keepalive,
)

if TYPE_CHECKING:
    import ssl

logger = logging.getLogger(__name__)

#: Called with a reply (or the error) that came after its call had timed out.
LateReplyHook = Callable[[Message | None], None]

_RECEIVE_BYTES = 1 << 16

#: Requests after whose success the server holds something for this session that it
#: releases when the session is dropped; keyed by op, given the request's arguments.
_HOLDING_OPS: dict[str, Callable[[Message], bool]] = {
    "leases": lambda arguments: bool(arguments.get("acquire")),
    "lock": lambda arguments: True,
    "update": lambda arguments: bool(arguments.get("ephemeral")),
}


class _Broken(Exception):
    """The stream is unusable; ``str()`` says why (becomes the ``ConnectionLostError`` reason)."""


class _Slot:
    """Where the reply of one request lands, and what to do if it lands too late."""

    __slots__ = ("done", "error", "late", "reply")

    def __init__(self) -> None:
        self.done = False
        self.reply: Message | None = None
        self.error: BaseException | None = None
        self.late: LateReplyHook | None = None

    def outcome(self) -> Message:
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


class SocketSession:
    """The session with the server at ``url`` (``statehub+tcp://host:port``)."""

    def __init__(
        self,
        url: str,
        *,
        tls: ssl.SSLContext | None,
        server_name: str | None,
        token: str | None,
        credential: str | None,
        client_name: str,
        connect_timeout: float,
        reconnect: bool,
        backoff_initial: float,
        backoff_max: float,
        on_lost: Callable[[str], None],
        on_restored: Callable[[], None],
        on_holds_lost: Callable[[Message], None],
    ) -> None:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"{url} names no host and port")
        self.target = url
        self._host, self._port = parts.hostname, parts.port
        self._tls, self._server_name = tls, server_name
        #: What a poll of an empty socket raises. ssl is imported only with TLS (whoever
        #: built the context has loaded it already): a plain `statehub get` starts faster.
        self._nothing_to_read: tuple[type[OSError], ...] = (BlockingIOError,)
        if tls is not None:
            import ssl

            self._nothing_to_read += (ssl.SSLWantReadError,)
        self._wanted_token, self._credential = token, credential
        self._client_name = client_name
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect
        self._backoff_initial, self._backoff_max = backoff_initial, backoff_max
        self._on_lost, self._on_restored = on_lost, on_restored
        self._on_holds_lost = on_holds_lost
        self._in_callback = threading.local()

        #: Guards every field below; waiting threads sleep on it.
        self._state = threading.Condition()
        self._open_lock = threading.Lock()  # one (re)connect at a time
        self._write_lock = threading.Lock()  # one frame on the wire at a time
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._reading = False
        self._ids = itertools.count(1)
        self._pending: dict[int, _Slot] = {}
        self._subscriptions: dict[Subscription, None] = {}
        self._subs_by_id: dict[int, Subscription] = {}
        self._subscribing = 0
        self._early_batches: dict[int, list[Message]] = {}
        self._helper: threading.Thread | None = None
        self._closed = False
        #: The error the server said it ends the session with (its last frame), if any.
        self._server_error: Exception | None = None
        #: The session took a lease, a lock or a bound key: keep reading (heartbeat pings).
        self._holding = False
        #: When the last frame came from the server (time.monotonic()).
        self._last_heard = 0.0
        self._keepalive_s = 15.0

        self.connected = False
        #: +1 each time a session opens: what was held under an older one is gone.
        self.generation = 0
        self.session: str | None = None
        self.token: str | None = None
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        self.lost_reason = ""
        #: The id of the server's history (the epoch revisions count in), from hello.
        self.epoch: object = None

    # -- opening and closing ---------------------------------------------------------

    def connect(self) -> None:
        """Open the session; ``ConnectionLostError`` if the server cannot be reached."""
        if self._closed:
            raise ConnectionLostError("the client is closed")
        self._open()

    def _open(self) -> None:
        """Connect and say hello (if not connected yet), then resubscribe."""
        with self._open_lock:
            if self.connected or self._closed:
                return
            sock = self._dial()
            with self._state:
                self._sock = sock
                self.generation += 1
                self.connected = True
                self._state.notify_all()
            logger.debug("session %s open with %s", self.session, self.target)
            self._resubscribe()
        if self.generation > 1:
            with self._callback():
                self._on_restored()

    def _dial(self) -> socket.socket:
        deadline = time.monotonic() + self._connect_timeout
        try:
            sock = socket.create_connection((self._host, self._port), self._connect_timeout)
        except TimeoutError:
            raise ConnectionLostError(
                f"cannot connect to statehub at {self.target}: "
                f"no answer within {self._connect_timeout} s"
            ) from None
        except OSError as error:
            raise ConnectionLostError(
                f"cannot connect to statehub at {self.target}: {error.strerror or error}"
            ) from None
        try:
            set_keepalive(sock, 10.0, 5.0)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._server_name or self._host)
            hello_id = next(self._ids)
            hello = hello_message(hello_id, self._wanted_token, self._client_name, self._credential)
            frame = encode_batch([hello])
            sock.sendall(encode_length(frame) + frame)
            self._buffer.clear()
            welcome = welcome_from(self._next_frame(sock, deadline), hello_id, self.target)
        except TimeoutError:
            sock.close()
            raise ConnectionLostError(
                f"cannot connect to statehub at {self.target}: "
                f"no answer within {self._connect_timeout} s"
            ) from None
        except (OSError, _Broken) as error:
            sock.close()
            raise ConnectionLostError(
                f"cannot connect to statehub at {self.target}: {error}"
            ) from None
        except BaseException:
            sock.close()
            raise
        self.epoch = welcome.epoch
        self.session, self.token = welcome.session, welcome.token
        self.max_message_bytes = welcome.max_message_bytes
        self._keepalive_s = welcome.keepalive_s
        return sock

    def reopen(self) -> None:
        """After a lost session: one attempt to open a new one (``ConnectionLostError`` if not)."""
        if not self._reconnect:
            raise ConnectionLostError(self._not_connected())
        try:
            self._open()
        except ConnectionLostError as error:
            self.lost_reason = str(error)
            raise ConnectionLostError(self._not_connected()) from None

    def wait_connected(self, timeout: float | None = None) -> None:
        """Reconnect (with backoff) until a session is open; ``ConnectionLostError`` once
        ``timeout`` s have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self._backoff_initial
        while not self.is_connected():
            if self._closed:
                raise ConnectionLostError("the client is closed")
            try:
                self.reopen()
                return
            except ConnectionLostError:
                pass
            pause = delay * random.uniform(0.8, 1.2)
            if deadline is not None and time.monotonic() + pause > deadline:
                raise ConnectionLostError(
                    f"not reconnected to statehub at {self.target} within {timeout} s"
                    f" (last error: {self.lost_reason or 'none'})"
                ) from None
            time.sleep(pause)  # the reconnect backoff itself
            delay = min(delay * 2, self._backoff_max)

    def close(self) -> None:
        """End the session for good: waiting calls get ``ConnectionLostError``."""
        with self._state:
            if self._closed:
                return
            self._closed = True
        self._lost(self.generation, "the client was closed", quiet=True)
        helper = self._helper
        if helper is not None and helper is not threading.current_thread():
            helper.join(5)

    def is_connected(self) -> bool:
        """True while the session is open; reads what has arrived, so a server that has
        gone is noticed without a call."""
        self._poll()
        return self.connected

    # -- requests --------------------------------------------------------------------

    def call(
        self,
        op: str,
        arguments: Message,
        timeout: float | None,
        late: LateReplyHook | None = None,
    ) -> Message:
        """Send a request, wait at most ``timeout`` s (None: no limit) for its reply.

        ``late``: keep listening after a timeout and pass the reply to it (a lock
        request gives a late grant back), instead of dropping it.
        """
        if self.connected and time.monotonic() - self._last_heard >= self._keepalive_s:
            self._poll()  # the server may have dropped this idle session: read its word
        if not self.connected:
            self.reopen()
        try:
            reply = self._call(op, arguments, timeout, late)
        except HeartbeatTimeoutError:
            # Dropped for silence before the request arrived, so it never ran: send it on
            # a new session. (A drop may only race a call of a session holding nothing.)
            self.reopen()
            reply = self._call(op, arguments, timeout, late)
        holds = _HOLDING_OPS.get(op)
        if holds is not None and holds(arguments):
            self._keep_reading()
        return reply

    def _keep_reading(self) -> None:
        """The session now holds something: read (answer the server's pings) until it ends."""
        with self._state:
            self._holding = True
        self._start_helper()

    @contextlib.contextmanager
    def _callback(self) -> Iterator[None]:
        """Run the client's event callback: a blocking call made from it, in the thread that
        may be the one reading for every other caller, fails instead of waiting for itself."""
        self._in_callback.active = True
        try:
            yield
        finally:
            self._in_callback.active = False

    def _call(
        self, op: str, arguments: Message, timeout: float | None, late: LateReplyHook | None = None
    ) -> Message:
        if getattr(self._in_callback, "active", False):
            raise RuntimeError(
                "a blocking Client call from an event callback would wait for itself: hand "
                "the work to another thread"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        request_id, slot = self._send(op, arguments, want_reply=True)
        assert slot is not None
        return self._wait(request_id, slot, op, timeout, deadline, late)

    def send_and_forget(self, op: str, arguments: Message) -> None:
        """Send a request whose reply nobody waits for (dropped when it comes)."""
        if self.connected:
            with contextlib.suppress(ConnectionLostError):
                self._send(op, arguments, want_reply=False)

    def _send(self, op: str, arguments: Message, want_reply: bool) -> tuple[int, _Slot | None]:
        with self._state:
            if not self.connected:
                raise ConnectionLostError(self._not_connected())
            request_id = next(self._ids)
            sock, generation = self._sock, self.generation
        message = {"id": request_id, "op": op}
        message.update(arguments)
        try:
            frame = encode_batch([message])
        except TypeError as error:
            raise TypeError(f"{op!r} request: {error}") from None
        if len(frame) > self.max_message_bytes:
            raise MessageTooLargeError(
                f"{op!r} request is {len(frame):,} bytes, over the server's limit of "
                f"{self.max_message_bytes:,} bytes"
            )
        slot = _Slot() if want_reply else None
        if slot is not None:
            with self._state:
                self._pending[request_id] = slot
        assert sock is not None
        try:
            with self._write_lock:
                sock.sendall(encode_length(frame) + frame)
        except OSError as error:
            reason = f"writing failed: {type(error).__name__}: {error}"
            server_error = self._server_error  # if its last frame was read already
            self._lost(generation, reason, server_error)
            if server_error is not None:
                raise copy.copy(server_error) from None
            raise ConnectionLostError(
                f"lost the connection to statehub at {self.target}: {reason}"
            ) from None
        return request_id, slot

    def _wait(
        self,
        request_id: int,
        slot: _Slot,
        op: str,
        timeout: float | None,
        deadline: float | None,
        late: LateReplyHook | None,
    ) -> Message:
        state = self._state
        with state:
            while not slot.done and self._reading:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                state.wait(remaining)
            expired = not slot.done and self._reading
            reader = not slot.done and not self._reading
            if reader:
                self._reading = True
        if reader:
            try:
                self._read_until(slot, deadline)
            except TimeoutError:
                pass
            finally:
                with state:
                    self._reading = False
                    state.notify_all()
        with state:
            expired = expired or not slot.done
            if expired:
                self._withdraw(request_id, slot, late)
        if expired:
            self.send_and_forget("cancel", {"request": request_id})
            raise timed_out(repr(op), self.target, timeout or 0.0)
        return slot.outcome()

    def _withdraw(self, request_id: int, slot: _Slot, late: LateReplyHook | None) -> None:
        """Forget a timed-out request, or keep it to hand a late reply to ``late``.
        Called with ``_state`` held."""
        if late is None:
            self._pending.pop(request_id, None)
        else:
            slot.late = late

    # -- reading -----------------------------------------------------------------------

    def _read_until(self, slot: _Slot | None, deadline: float | None) -> None:
        """Read and dispatch frames until ``slot`` is done (or, for None, while there
        are subscriptions). Raises ``TimeoutError`` at ``deadline``."""
        with self._state:
            sock, generation = self._sock, self.generation
        if sock is None:
            return
        while (not slot.done) if slot is not None else (self._wants_reader() and self.connected):
            try:
                frame = self._next_frame(sock, deadline)
                messages = decode_batch(frame)
            except TimeoutError:
                raise
            except _Broken as error:
                self._lost(generation, str(error), self._server_error)
                return
            except ProtocolError as error:
                self._lost(generation, f"the server sent a malformed frame: {error}")
                return
            except OSError as error:  # a reset right after the server's last frame too
                self._lost(generation, f"{type(error).__name__}: {error}", self._server_error)
                return
            self._dispatch(messages)

    def _next_frame(self, sock: socket.socket, deadline: float | None) -> bytes:
        """The next whole frame (bytes already buffered first); ``TimeoutError`` at
        ``deadline`` with any partial frame kept for the next read."""
        buffer = self._buffer
        while True:
            if len(buffer) >= LENGTH_BYTES:
                length = int.from_bytes(buffer[:LENGTH_BYTES], "big")
                if length > MAX_SERVER_FRAME:
                    raise _Broken(f"the server sent a frame length of {length} bytes")
                end = LENGTH_BYTES + length
                if len(buffer) >= end:
                    with memoryview(buffer) as view:
                        frame = bytes(view[LENGTH_BYTES:end])
                    del buffer[:end]
                    self._last_heard = time.monotonic()
                    return frame
            if deadline is None:
                sock.settimeout(None)
            else:
                sock.settimeout(max(deadline - time.monotonic(), 0.0))
            try:
                chunk = sock.recv(_RECEIVE_BYTES)
            except self._nothing_to_read:
                raise TimeoutError from None  # a poll found nothing (yet)
            if not chunk:
                if buffer:
                    raise _Broken("the server closed the connection inside a frame")
                raise _Broken(
                    f"the server closed the connection: {self._server_error}"
                    if self._server_error
                    else "the server ended the session"
                )
            buffer += chunk

    def _dispatch(self, messages: list[Message]) -> None:
        deliveries: list[tuple[Subscription, Message]] = []
        pings: list[object] = []
        holds_lost: list[Message] = []
        late: list[tuple[LateReplyHook, Message | None]] = []
        with self._state:
            for message in messages:
                request_id = message.get("id")
                if request_id is not None:
                    slot = self._pending.pop(request_id, None)
                    if slot is None:
                        continue
                    if "error" in message:
                        slot.error = error_from_wire(message["error"] or {})
                    else:
                        slot.reply = message.get("ok") or {}
                    slot.done = True
                    if slot.late is not None:
                        late.append((slot.late, slot.reply))
                    continue
                sub_id = message.get("sub")
                if sub_id is None:
                    lost = message.get("lost")
                    if "ping" in message:  # the server's heartbeat: answered outside the lock
                        pings.append(message["ping"])
                    if isinstance(lost, dict):  # holds taken away: told outside the lock
                        holds_lost.append(lost)
                    if "error" in message:  # why the server is about to close
                        self._server_error = error_from_wire(message["error"] or {})
                        logger.warning(
                            "statehub at %s reported: %s", self.target, self._server_error
                        )
                    continue
                subscription = self._subs_by_id.get(sub_id)
                if subscription is not None:
                    deliveries.append((subscription, message))
                elif self._subscribing:  # a batch may overtake its subscribe reply
                    self._early_batches.setdefault(sub_id, []).append(message)
            self._state.notify_all()
        for ping in pings:
            self._pong(ping)
        for lost in holds_lost:
            with self._callback():
                self._on_holds_lost(lost)
        for subscription, message in deliveries:
            subscription.deliver(message, self.epoch)
        for hook, reply in late:
            try:
                hook(reply)
            except Exception:
                logger.exception("late-reply hook failed")

    def _pong(self, ping: object) -> None:
        """Answer the server's heartbeat ping (a broken socket is the reader's to report).

        Not if another thread is writing: its frame answers the ping as well, and the
        reader must not wait behind a write the server may be holding back until it
        reads (the reader's own job)."""
        frame = encode_batch([{"pong": ping}])
        with self._state:
            sock = self._sock
        if sock is None or not self._write_lock.acquire(blocking=False):
            return
        try:
            with contextlib.suppress(OSError):
                sock.sendall(encode_length(frame) + frame)
        finally:
            self._write_lock.release()

    def _poll(self) -> None:
        """Read whatever has arrived, without waiting, if nobody else is reading."""
        with self._state:
            if not self.connected or self._reading:
                return
            self._reading = True
        try:
            while self.connected:
                self._read_until(_Slot(), time.monotonic())
        except TimeoutError:
            pass
        finally:
            with self._state:
                self._reading = False
                self._state.notify_all()

    # -- losing the session ----------------------------------------------------------

    def _lost(
        self,
        generation: int,
        reason: str,
        server_error: Exception | None = None,
        *,
        quiet: bool = False,
    ) -> None:
        """The session of ``generation`` ended: fail what waits (with ``server_error``, the
        server's own error, if it said why it ended the session), tell the client."""
        with self._state:
            if generation != self.generation or not self.connected:
                return
            self.connected = False
            sock, self._sock = self._sock, None
            pending, self._pending = self._pending, {}
            self._subs_by_id.clear()
            self._early_batches.clear()
            for subscription in self._subscriptions:
                subscription.sub_id = None
            self.lost_reason = reason
            self._server_error = None
            self._holding = False  # the server released all of it with the session
            message = f"lost the connection to statehub at {self.target}: {reason}"
            for slot in pending.values():
                # each waiter its own copy: one instance raised in several threads would
                # collect all their tracebacks
                error = copy.copy(server_error) if server_error is not None else None
                slot.error, slot.done = error or ConnectionLostError(message), True
            self._state.notify_all()
        if sock is not None:
            # shutdown wakes a thread blocked reading it; close alone would not
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if quiet:
            return
        logger.warning("%s", message)
        with self._callback():
            self._on_lost(reason)
        if self._subscriptions and self._reconnect:
            self._start_helper()

    def _not_connected(self) -> str:
        if self._closed:
            return "the client is closed"
        return (
            f"not connected to statehub at {self.target}: {self.lost_reason}"
            f"{'; reconnecting' if self._reconnect else ''}"
        )

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(
        self,
        interval: float,
        prefix: str,
        handler: BatchHandler,
        timeout: float | None = None,
    ) -> Subscription:
        """Subscribe; batches go to ``handler`` (in whichever thread reads), across
        reconnects. A helper thread reads while there are subscriptions."""
        subscription = Subscription(interval, prefix, handler)
        if not self.connected:
            self.reopen()
        self._subscribe(subscription, timeout)
        self._start_helper()
        return subscription

    def _subscribe(self, subscription: Subscription, timeout: float | None) -> None:
        """Subscribe on this session, resuming from the subscription's last revision and
        the epoch it counts in (the server sends a snapshot unless that history is its own
        and still holds the revision)."""
        with self._state:
            self._subscribing += 1
        try:
            arguments = {
                "interval": subscription.interval,
                "prefix": subscription.prefix,
                "since": subscription.revision,
                "epoch": subscription.epoch,
            }
            reply = self._call("subscribe", arguments, timeout)
            with self._state:
                self._subscriptions[subscription] = None
                sub_id = reply["sub"]
                subscription.sub_id = sub_id
                self._subs_by_id[sub_id] = subscription
                early = self._early_batches.pop(sub_id, [])
        finally:
            with self._state:
                self._subscribing -= 1
                if not self._subscribing:
                    self._early_batches.clear()
        for message in early:
            subscription.deliver(message, self.epoch)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop a subscription (no reply awaited); its handler gets nothing more."""
        with self._state:
            self._subscriptions.pop(subscription, None)
            sub_id, subscription.sub_id = subscription.sub_id, None
            if sub_id is None or self._subs_by_id.get(sub_id) is not subscription:
                return
            del self._subs_by_id[sub_id]
        self.send_and_forget("unsubscribe", {"sub": sub_id})

    def _resubscribe(self) -> None:
        """After a new session opens: subscribe again, each from its last revision seen."""
        for subscription in list(self._subscriptions):
            try:
                self._subscribe(subscription, self._connect_timeout)
            except ConnectionLostError:
                raise
            except Exception as error:
                logger.error("could not resubscribe to %r: %s", subscription.prefix, error)
                with self._state:
                    self._subscriptions.pop(subscription, None)

    def _start_helper(self) -> None:
        with self._state:
            if self._closed or (self._helper is not None and self._helper.is_alive()):
                return
            self._helper = threading.Thread(
                target=self._helper_loop, name="statehub-subscriptions", daemon=True
            )
            self._helper.start()

    def _wants_reader(self) -> bool:
        """Someone must read even while no call does: subscriptions, or held things."""
        return bool(self._subscriptions) or self._holding

    def _helper_loop(self) -> None:
        """Read while there are subscriptions or holds; reconnect with backoff when the
        session drops (while there are subscriptions: holds end with the session)."""
        delay = self._backoff_initial
        while not self._closed and self._wants_reader():
            if not self.connected:
                if not self._reconnect:
                    return
                try:
                    self._open()
                    delay = self._backoff_initial
                except Exception as error:  # whatever went wrong, try again later
                    self.lost_reason = str(error)
                    time.sleep(delay * random.uniform(0.8, 1.2))  # the reconnect backoff
                    delay = min(delay * 2, self._backoff_max)
                continue
            with self._state:
                while self._reading and self.connected and not self._closed:
                    self._state.wait()
                if not self.connected or self._closed:
                    continue
                self._reading = True
            try:
                self._read_until(None, None)
            finally:
                with self._state:
                    self._reading = False
                    self._state.notify_all()


__all__ = ["LateReplyHook", "SocketSession"]
