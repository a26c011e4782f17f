"""Wake-ups for waiters on shared data: blocked threads and asyncio tasks alike.

A write pays O(event loops with waiters) to wake, not O(waiters): every asyncio waiter of
one loop shares a single future per generation, and threads share one condition.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class Notifier:
    """Lets threads and asyncio tasks wait, under ``lock``, until a predicate holds."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self._condition = threading.Condition(lock)
        self._blocked_threads = 0
        self._loop_futures: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}

    def notify(self) -> None:
        """Wake every waiter so it re-checks its predicate. The caller holds ``lock``."""
        if self._blocked_threads:
            self._condition.notify_all()
        if not self._loop_futures:
            return
        futures, self._loop_futures = self._loop_futures, {}
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, future in futures.items():
            if loop is running:
                _resolve(future)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    def wait_blocking(self, ready: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block this thread until ``ready()``; the caller holds ``lock``. False on timeout."""
        self._blocked_threads += 1
        try:
            return self._condition.wait_for(ready, timeout)
        finally:
            self._blocked_threads -= 1

    async def wait(self, ready: Callable[[], bool]) -> None:
        """Wait in the running event loop until ``ready()`` (checked under ``lock``)."""
        loop = asyncio.get_running_loop()
        while True:
            with self.lock:
                if ready():
                    return
                future = self._loop_futures.get(loop)
                if future is None:
                    future = self._loop_futures[loop] = loop.create_future()
            # shield: cancelling one waiter must not cancel the future its peers share.
            await asyncio.shield(future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
