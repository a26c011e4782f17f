"""One session with a statehub server (TCP, gRPC or WebSocket): pipelining, replies, reconnects.

Every request gets an id and a future; replies are matched by id, so any number of calls
share the one stream and a slow ``lock`` does not hold up the calls behind it. Outgoing
messages queue in an outbox; a single writer task drains whatever has queued up into one
frame (a gRPC or WebSocket message, see ``transports``), so a burst of calls costs one
transport message, not one each.

When the stream breaks, every waiting call fails with ``ConnectionLostError`` and so does every
new call until a new session is open. The connection reconnects with exponential backoff
(with jitter) and resubscribes each wanted subscription from the last revision it saw, so
the server can answer with only what changed (or a snapshot when that history is gone).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import logging
import random
from collections.abc import Callable
from typing import Any

from statehub.client.frame_stream import FrameStream, StreamBroken
from statehub.client.hello import DEFAULT_MAX_MESSAGE_BYTES, hello_message, welcome_from
from statehub.client.subscription import BatchHandler, Message, Subscription
from statehub.client.timeouts import timed_out
from statehub.client.tls import ClientTls
from statehub.client.transports import describe_target, open_frame_stream
from statehub.errors import ConnectionLostError, MessageTooLargeError, ProtocolError
from statehub.protocol import decode_batch, encode_batch, error_from_wire

logger = logging.getLogger(__name__)

_DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Done callback of a fire-and-forget request: read its outcome so none goes unseen."""
    if not future.cancelled() and future.exception() is not None:
        logger.debug("fire-and-forget request failed: %s", future.exception())


class Connection:
    """The session stream, its reconnects, and requests matched to replies by id.

    ``on_lost(reason)`` is called when a live session ends unexpectedly and
    ``on_restored()`` when a new session is open and resubscribed; ``on_holds_lost(lost)``
    when the server took leases or locks of this live session away (``lost``: leases,
    locks, reason; an admin's force release, or a sweep of a cut-off server). All run in
    the event loop and must not block.
    """

    def __init__(
        self,
        address: str,
        port: int,
        *,
        token: str | None = None,
        credential: str | None = None,
        tls: ClientTls | None = None,
        client_name: str = "statehub-python",
        connect_timeout: float = 5.0,
        reconnect: bool = True,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        on_lost: Callable[[str], None] | None = None,
        on_restored: Callable[[], None] | None = None,
        on_holds_lost: Callable[[Message], None] | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self._wanted_token = token
        self._credential = credential
        self._tls = tls
        self._client_name = client_name
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_lost = on_lost
        self._on_restored = on_restored
        self._on_holds_lost = on_holds_lost

        #: True while a session is open and requests may be sent.
        self.connected = False
        #: +1 each time a session opens: what was held under an older one is gone.
        self.generation = 0
        self.session: str | None = None
        self.token: str | None = None
        #: The id of the server's history (the epoch revisions count in), from hello.
        self.epoch: object = None
        self.keepalive_s = 15.0
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        #: Why the last session ended ("" if none ended).
        self.lost_reason = ""

        self._closed = False
        self._stream_open = False
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._outbox: list[Message] = []
        self._wake = asyncio.Event()
        self._connected_event = asyncio.Event()
        self._subscriptions: dict[Subscription, None] = {}
        self._subs_by_id: dict[int, Subscription] = {}
        self._subscribing = 0
        self._early_batches: dict[int, list[Message]] = {}
        self._stream: FrameStream | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reconnector: asyncio.Task[None] | None = None
        self._last_received = 0.0
        #: The error the server ended the session with (its last message), once it came.
        self._server_error: Exception | None = None
        #: Per timeout, the requests that have one, in send order: (deadline, future, op).
        self._deadlines: dict[
            float, collections.deque[tuple[float, asyncio.Future[Message], str]]
        ] = {}
        self._deadline_timer: asyncio.TimerHandle | None = None

    @property
    def target(self) -> str:
        return describe_target(self.address, self.port)

    # -- opening and closing ---------------------------------------------------------

    async def connect(self) -> None:
        """Open the first session; ``ConnectionLostError`` if the server cannot be reached."""
        if self._closed:
            raise ConnectionLostError("the client is closed")
        if self.connected:
            return
        if self._reconnector is not None and not self._reconnector.done():
            await self.wait_connected(self._connect_timeout)
            return
        await self._open()
        await self._resubscribe()
        self._mark_connected()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a session is open; ``ConnectionLostError`` if ``timeout`` s pass first."""
        if self.connected:
            return
        if self._closed:
            raise ConnectionLostError("the client is closed")
        try:
            async with asyncio.timeout(timeout):
                await self._connected_event.wait()
        except TimeoutError:
            raise ConnectionLostError(
                f"not reconnected to statehub at {self.target} within {timeout} s"
                f" (last error: {self.lost_reason or 'none'})"
            ) from None
        if self._closed:
            raise ConnectionLostError("the client is closed")

    async def close(self) -> None:
        """End the session for good: no reconnects; waiting calls get ``ConnectionLostError``."""
        if self._closed:
            return
        self._closed = True
        self.connected = False
        if self._reconnector is not None:
            self._reconnector.cancel()
        stream = self._stream
        self._stop_stream()
        self._fail_pending("the client was closed")
        self._connected_event.set()  # wake waiters so they see `closed`
        if stream is not None:
            await stream.close()

    async def _open(self) -> None:
        """Connect, say hello, and start the reader, writer and keepalive tasks."""
        stream: FrameStream | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                stream = await open_frame_stream(self.address, self.port, self._tls)
                hello_id = next(self._ids)
                hello = hello_message(
                    hello_id, self._wanted_token, self._client_name, self._credential
                )
                await stream.write(encode_batch([hello]))
                frame = await stream.read()
            self._take_hello(frame, hello_id)
        except TimeoutError:
            if stream is not None:
                await stream.close()
            raise ConnectionLostError(
                f"cannot connect to statehub at {self.target}: "
                f"no answer within {self._connect_timeout} s"
            ) from None
        except StreamBroken as error:
            if stream is not None:
                await stream.close()
            if error.error is not None:  # the server refused the session, and said why
                raise error.error from None
            raise ConnectionLostError(
                f"cannot connect to statehub at {self.target}: {error}"
            ) from None
        except BaseException:
            if stream is not None:
                await stream.close()
            raise
        self._stream = stream
        self.generation += 1
        self._stream_open = True
        self._last_received = asyncio.get_running_loop().time()
        self._server_error = None
        generation = self.generation
        self._tasks = [
            asyncio.create_task(self._read_loop(stream, generation), name="statehub-read"),
            asyncio.create_task(self._write_loop(stream, generation), name="statehub-write"),
            asyncio.create_task(self._keepalive_loop(generation), name="statehub-keepalive"),
        ]
        logger.debug("session %s open with %s", self.session, self.target)

    def _take_hello(self, frame: bytes | None, hello_id: int) -> None:
        if frame is None:
            raise ConnectionLostError(f"statehub at {self.target} ended the session at hello")
        welcome = welcome_from(frame, hello_id, self.target)
        self.epoch = welcome.epoch
        self.session = welcome.session
        self.token = welcome.token
        self.keepalive_s = welcome.keepalive_s
        self.max_message_bytes = welcome.max_message_bytes

    def _mark_connected(self) -> None:
        self.connected = True
        self._connected_event.set()

    def _stop_stream(self) -> None:
        self._stream_open = False
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = []
        self._stream = None

    def _fail_pending(self, reason: str, server_error: Exception | None = None) -> None:
        self._deadlines.clear()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        pending, self._pending = self._pending, {}
        self._outbox.clear()
        for future in pending.values():
            if not future.done():
                # each waiter its own copy: one instance raised in several tasks would
                # collect all their tracebacks
                error = copy.copy(server_error) if server_error is not None else None
                future.set_exception(error or ConnectionLostError(reason))

    def _lost(self, generation: int, reason: str, server_error: Exception | None = None) -> None:
        """The session of ``generation`` ended: fail what waits (with ``server_error``, the
        server's own error, if it said why it ended the session), then reconnect."""
        if generation != self.generation or not self._stream_open or self._closed:
            return
        stream = self._stream
        self._stop_stream()
        self.connected = False
        self._connected_event.clear()
        self.lost_reason = reason
        message = f"lost the connection to statehub at {self.target}: {reason}"
        logger.warning("%s", message)
        self._fail_pending(message, server_error)
        self._subs_by_id.clear()
        self._early_batches.clear()
        for subscription in self._subscriptions:
            subscription.sub_id = None
        if stream is not None:
            stream.abort()
        if self._on_lost is not None:
            try:
                self._on_lost(reason)
            except Exception:
                logger.exception("connection-lost callback failed")
        if self._reconnect and (self._reconnector is None or self._reconnector.done()):
            self._reconnector = asyncio.create_task(
                self._reconnect_loop(), name="statehub-reconnect"
            )

    async def _reconnect_loop(self) -> None:
        delay = self._backoff_initial
        attempt = 0
        while not self._closed:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            attempt += 1
            try:
                await self._open()
                await self._resubscribe()
            except Exception as error:  # whatever went wrong, try again later
                logger.info("reconnect attempt %d to %s failed: %s", attempt, self.target, error)
                self.lost_reason = str(error)
                if self._stream_open:  # the session opened but broke while resubscribing
                    self._stop_stream()
                delay = min(delay * 2, self._backoff_max)
                continue
            self._mark_connected()
            logger.info("reconnected to %s after %d attempt(s)", self.target, attempt)
            if self._on_restored is not None:
                try:
                    self._on_restored()
                except Exception:
                    logger.exception("reconnected callback failed")
            return

    # -- requests ------------------------------------------------------------------

    def send(self, op: str, arguments: Message) -> asyncio.Future[Message]:
        """Queue a request; the future gets the ``ok`` map or the error it came back with."""
        if not self.connected:
            raise ConnectionLostError(self._not_connected())
        return self._send(op, arguments)

    async def request(self, op: str, **arguments: Any) -> Message:
        """Send a request and wait for its reply."""
        return await self.send(op, arguments)

    def call(self, op: str, arguments: Message, timeout: float | None) -> asyncio.Future[Message]:
        """Send a request; its future fails with statehub's ``TimeoutError`` if no reply
        comes within ``timeout`` s (None: no limit).

        A request that times out leaves no trace: it is forgotten (a late reply is
        dropped) and the server asked to stop it. No timer per call: one per connection,
        armed for the earliest deadline (requests of one timeout expire in send order).
        """
        future = self.send(op, arguments)
        if timeout is not None:
            deadline = asyncio.get_running_loop().time() + timeout
            queue = self._deadlines.get(timeout)
            if queue is None:
                queue = self._deadlines[timeout] = collections.deque()
            queue.append((deadline, future, op))
            timer = self._deadline_timer
            if timer is None or timer.when() > deadline:
                self._arm_deadline_timer(deadline)
        return future

    def _arm_deadline_timer(self, when: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer = asyncio.get_running_loop().call_at(when, self._expire_due)

    def _expire_due(self) -> None:
        """Expire every request past its deadline, then re-arm for the next one."""
        self._deadline_timer = None
        now = asyncio.get_running_loop().time()
        earliest: float | None = None
        for timeout, queue in list(self._deadlines.items()):
            while queue:
                deadline, future, op = queue[0]
                if not future.done() and deadline > now:
                    break
                queue.popleft()
                if not future.done():
                    self._expire(future, op, timeout)
            if queue:
                head = queue[0][0]
                earliest = head if earliest is None else min(earliest, head)
            else:
                del self._deadlines[timeout]
        if earliest is not None:
            self._arm_deadline_timer(earliest)

    def _forget_answered(self) -> None:
        """Drop answered requests from the deadline queues' heads (they mostly answer in
        order), so the queues hold about what is in flight."""
        for queue in self._deadlines.values():
            while queue and queue[0][1].done():
                queue.popleft()

    def _expire(self, future: asyncio.Future[Message], op: str, timeout: float) -> None:
        if future.done():
            return
        self.withdraw(future)
        future.set_exception(timed_out(repr(op), self.target, timeout))

    def withdraw(self, future: asyncio.Future[Message]) -> None:
        """Forget the request behind ``future``: unsent, it never leaves; sent, the server
        is asked to stop it (``cancel``) and its reply will be dropped."""
        request_id = next(
            (rid for rid, pending in self._pending.items() if pending is future), None
        )
        if request_id is None:
            return
        del self._pending[request_id]
        unsent = len(self._outbox)
        self._outbox[:] = [message for message in self._outbox if message.get("id") != request_id]
        if len(self._outbox) == unsent:
            self.send_and_forget("cancel", {"request": request_id})

    def cancel(self, future: asyncio.Future[Message]) -> None:
        """Ask the server to stop the request behind ``future`` if it is still waiting."""
        for request_id, pending in self._pending.items():
            if pending is future:
                self.send_and_forget("cancel", {"request": request_id})
                return

    def send_and_forget(self, op: str, arguments: Message) -> None:
        """Queue a request whose reply nobody waits for (an error is only logged)."""
        if self._stream_open:
            self._send(op, arguments).add_done_callback(_retrieve)

    def _send(self, op: str, arguments: Message) -> asyncio.Future[Message]:
        request_id = next(self._ids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        message = {"id": request_id, "op": op}
        message.update(arguments)
        self._pending[request_id] = future
        self._outbox.append(message)
        self._wake.set()
        return future

    def _not_connected(self) -> str:
        if self._closed:
            return "the client is closed"
        if self.generation == 0:
            return f"not connected to statehub at {self.target} (call connect() first)"
        return (
            f"not connected to statehub at {self.target}: {self.lost_reason}"
            f"{'; reconnecting' if self._reconnect else ''}"
        )

    # -- subscriptions -------------------------------------------------------------

    async def subscribe(
        self, interval: float, prefix: str, handler: BatchHandler, timeout: float | None = None
    ) -> Subscription:
        """Subscribe; batches go to ``handler`` in the event loop, across reconnects."""
        subscription = Subscription(interval, prefix, handler)
        future = self.call(
            "subscribe", {"interval": interval, "prefix": prefix, "since": None}, timeout
        )
        self._subscribing += 1
        try:
            reply = await future
        finally:
            self._subscribing -= 1
        self._subscriptions[subscription] = None
        self._attach(subscription, reply["sub"])
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop a subscription (no reply awaited); its handler gets nothing more."""
        self._subscriptions.pop(subscription, None)
        sub_id, subscription.sub_id = subscription.sub_id, None
        if sub_id is not None and self._subs_by_id.get(sub_id) is subscription:
            del self._subs_by_id[sub_id]
            self.send_and_forget("unsubscribe", {"sub": sub_id})

    def _attach(self, subscription: Subscription, sub_id: int) -> None:
        subscription.sub_id = sub_id
        self._subs_by_id[sub_id] = subscription
        for message in self._early_batches.pop(sub_id, ()):
            subscription.deliver(message, self.epoch)
        if not self._subscribing:
            self._early_batches.clear()

    async def _resubscribe(self) -> None:
        """After a new session opens: subscribe again, each from its last revision seen."""
        wanted = list(self._subscriptions)
        if not wanted:
            return
        futures = [
            self._send(
                "subscribe",
                {
                    "interval": sub.interval,
                    "prefix": sub.prefix,
                    "since": sub.revision,
                    "epoch": sub.epoch,
                },
            )
            for sub in wanted
        ]
        self._subscribing += 1
        try:
            replies = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            self._subscribing -= 1
        for subscription, reply in zip(wanted, replies, strict=True):
            if isinstance(reply, ConnectionLostError):
                raise reply
            if isinstance(reply, BaseException):
                logger.error("could not resubscribe to %r: %s", subscription.prefix, reply)
                self._subscriptions.pop(subscription, None)
                continue
            if subscription in self._subscriptions:
                self._attach(subscription, reply["sub"])
            else:  # dropped while we waited
                self.send_and_forget("unsubscribe", {"sub": reply["sub"]})

    # -- the stream's tasks --------------------------------------------------------

    async def _read_loop(self, stream: FrameStream, generation: int) -> None:
        loop = asyncio.get_running_loop()
        reason = "the server ended the session"
        server_error: Exception | None = None
        try:
            while True:
                frame = await stream.read()
                if frame is None:
                    break
                self._last_received = loop.time()
                for message in decode_batch(frame):
                    self._dispatch(message)
                if self._deadlines:
                    self._forget_answered()
        except asyncio.CancelledError:
            raise
        except StreamBroken as error:
            reason, server_error = str(error), error.error
        except ProtocolError as error:
            reason = f"the server sent a malformed frame: {error}"
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
        if self._server_error is not None:  # the server said why: the same on every transport
            server_error = self._server_error
            reason = f"the server ended the session: {server_error}"
        self._lost(generation, reason, server_error)

    def _dispatch(self, message: Message) -> None:
        request_id = message.get("id")
        if request_id is not None:
            future = self._pending.pop(request_id, None)
            if future is None or future.done():
                return
            if "error" in message:
                future.set_exception(error_from_wire(message["error"] or {}))
            else:
                future.set_result(message.get("ok") or {})
            return
        sub_id = message.get("sub")
        if sub_id is None:
            lost = message.get("lost")
            if "ping" in message:  # the server's heartbeat: any frame back proves we live
                self._outbox.append({"pong": message["ping"]})
                self._wake.set()
            elif isinstance(lost, dict):
                if self._on_holds_lost is not None:
                    self._on_holds_lost(lost)
            elif "error" in message:  # why the server ends the session (its last message)
                self._server_error = error_from_wire(message["error"] or {})
                logger.warning("statehub at %s reported: %s", self.target, self._server_error)
            else:
                logger.warning("ignoring a message with neither id nor sub: %r", message)
            return
        subscription = self._subs_by_id.get(sub_id)
        if subscription is not None:
            subscription.deliver(message, self.epoch)
        elif self._subscribing:  # a batch may overtake its subscribe reply
            self._early_batches.setdefault(sub_id, []).append(message)

    async def _write_loop(self, stream: FrameStream, generation: int) -> None:
        wake, outbox = self._wake, self._outbox
        try:
            while True:
                await wake.wait()
                wake.clear()
                while outbox:
                    batch = outbox[:]
                    outbox.clear()
                    for frame in self._frames(batch):
                        await stream.write(frame)
        except asyncio.CancelledError:
            raise
        except StreamBroken as error:
            self._lost(generation, str(error), error.error or self._server_error)
        except Exception as error:
            reason = f"writing failed: {type(error).__name__}: {error}"
            self._lost(generation, reason, self._server_error)

    def _frames(self, batch: list[Message]) -> list[bytes]:
        """Encode ``batch`` in as few frames as the size limit allows."""
        frame = self._encode(batch)
        if frame is None:
            return []
        if len(frame) <= self.max_message_bytes:
            return [frame]
        if len(batch) == 1:
            self._fail(
                batch[0],
                MessageTooLargeError(
                    f"{batch[0].get('op')!r} request is {len(frame):,} bytes, over the "
                    f"server's limit of {self.max_message_bytes:,} bytes"
                ),
            )
            return []
        half = len(batch) // 2
        return self._frames(batch[:half]) + self._frames(batch[half:])

    def _encode(self, batch: list[Message]) -> bytes | None:
        try:
            return encode_batch(batch)
        except TypeError:
            pass
        good = []
        for message in batch:  # find the messages that cannot travel; fail only those
            try:
                encode_batch([message])
            except TypeError as error:
                self._fail(message, TypeError(f"{message.get('op')!r} request: {error}"))
            else:
                good.append(message)
        return encode_batch(good) if good else None

    def _fail(self, message: Message, error: Exception) -> None:
        future = self._pending.pop(message["id"], None)
        if future is not None and not future.done():
            future.set_exception(error)

    async def _keepalive_loop(self, generation: int) -> None:
        """Ping when the server has been silent for ``keepalive_s``; no answer = lost."""
        loop = asyncio.get_running_loop()
        interval = self.keepalive_s
        while True:
            await asyncio.sleep(interval)
            if loop.time() - self._last_received < interval:
                continue
            ping = self._send("ping", {})
            try:
                async with asyncio.timeout(interval):
                    await ping
            except TimeoutError:
                self._lost(generation, f"the server did not answer a ping within {interval} s")
                return
            except ConnectionLostError:
                return
