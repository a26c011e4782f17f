"""The blocking ``Client``'s session over gRPC or WebSocket: a ``Connection`` in a
background event loop, each call submitted to it and waited for.

Those transports only come as asyncio libraries, so the hop to the loop's thread stays;
plain TCP needs none (``socket_session.SocketSession``). Both offer the same calls.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from statehub.client.connection import Connection
from statehub.client.socket_session import LateReplyHook
from statehub.client.subscription import BatchHandler, Message, Subscription
from statehub.client.timeouts import timed_out

T = TypeVar("T")


class LoopSession:
    """A ``Connection`` to the server, run in the process's client event loop."""

    def __init__(
        self,
        address: str,
        port: int,
        *,
        on_lost: Callable[[str], None],
        on_restored: Callable[[], None],
        **settings: Any,
    ) -> None:
        self._loop = _background_loop()
        self._conn = Connection(address, port, on_lost=on_lost, on_restored=on_restored, **settings)
        self.target = self._conn.target

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

    @property
    def connected(self) -> bool:
        return self._conn.connected

    def is_connected(self) -> bool:
        return self._conn.connected

    @property
    def generation(self) -> int:
        return self._conn.generation

    @property
    def session(self) -> str | None:
        return self._conn.session

    @property
    def token(self) -> str | None:
        return self._conn.token

    @property
    def max_message_bytes(self) -> int:
        return self._conn.max_message_bytes

    def connect(self) -> None:
        self._run(self._conn.connect())

    def wait_connected(self, timeout: float | None = None) -> None:
        self._run(self._conn.wait_connected(timeout))

    def close(self) -> None:
        self._run(self._conn.close())

    def call(
        self,
        op: str,
        arguments: Message,
        timeout: float | None,
        late: LateReplyHook | None = None,
    ) -> Message:
        if late is None:
            return self._run(self._call(op, arguments, timeout))
        return self._run(self._call_keeping_late(op, arguments, timeout, late))

    async def _call(self, op: str, arguments: Message, timeout: float | None) -> Message:
        return await self._conn.call(op, arguments, timeout)

    async def _call_keeping_late(
        self, op: str, arguments: Message, timeout: float | None, late: LateReplyHook
    ) -> Message:
        conn = self._conn
        future = conn.send(op, arguments)
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if done:
            return future.result()
        conn.cancel(future)

        def hand_over(answered: asyncio.Future[Message]) -> None:
            if not answered.cancelled():
                late(None if answered.exception() is not None else answered.result())

        future.add_done_callback(hand_over)
        raise timed_out(repr(op), self.target, timeout or 0.0)

    def send_and_forget(self, op: str, arguments: Message) -> None:
        self._loop.call_soon_threadsafe(self._conn.send_and_forget, op, arguments)

    def subscribe(
        self,
        interval: float,
        prefix: str,
        handler: BatchHandler,
        timeout: float | None = None,
    ) -> Subscription:
        return self._run(self._conn.subscribe(interval, prefix, handler, timeout))

    def unsubscribe(self, subscription: Subscription) -> None:
        self._loop.call_soon_threadsafe(self._conn.unsubscribe, subscription)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_loop_guard = threading.Lock()
_loop_and_pid: tuple[asyncio.AbstractEventLoop, int] | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    """The event loop every blocking gRPC/WebSocket client of this process runs in (one
    daemon thread).

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
