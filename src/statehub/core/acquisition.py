"""Waiting for a lock request that already holds its place in the queue.

A lock table takes a request's place when it is asked (so requests made one after the
other keep their order, even those of one frame that the server handles before any of
them waits), and hands back an ``Acquisition``: a coroutine that waits for the grant.
However that coroutine ends without handing over the fencing token (cancelled, timed
out, closed, or cancelled before it ever ran: a task cancelled before its first step
never enters a coroutine's body, so a plain ``async def`` could not clean up), the
request is withdrawn or its grant given back. So cancellation leaves no trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Acquisition(Coroutine[Any, Any, T], Generic[T]):
    """Await it (or make a task of it) for the grant's fencing token; one that will not
    be awaited must be closed, or its request keeps its place.

    ``grant`` is the lock table's future of the fence: the table withdraws the request
    when it is cancelled. ``give_back(fence)`` returns a grant nobody took.
    """

    def __init__(
        self,
        grant: asyncio.Future[int],
        give_back: Callable[[int], None],
        shape: Callable[[int], T],
    ) -> None:
        self._grant = grant
        self._give_back = give_back
        self._shape = shape
        self._waiting: Generator[Any, None, int] = grant.__await__()
        self._settled = False

    @staticmethod
    def of(grant: asyncio.Future[int], give_back: Callable[[int], None]) -> Acquisition[int]:
        """The acquisition whose result is the fence itself."""
        return Acquisition(grant, give_back, int)

    def replying(self, shape: Callable[[int], R]) -> Acquisition[R]:
        """The same wait, returning ``shape(fence)``; this one must no longer be used."""
        self._settled = True  # its successor now answers for the request
        return Acquisition(self._grant, self._give_back, shape)

    def send(self, value: Any) -> Any:
        try:
            return self._waiting.send(value)
        except StopIteration as done:
            self._settled = True  # handed over: the caller holds the lock now
            raise StopIteration(self._shape(done.value)) from None
        except BaseException:
            self._settle()
            raise

    def throw(
        self,
        error: type[BaseException] | BaseException,
        value: object = None,
        traceback: TracebackType | None = None,
    ) -> Any:
        self._settle()
        if not isinstance(error, BaseException):
            error = value if isinstance(value, BaseException) else error()
        return self._waiting.throw(error)

    def close(self) -> None:
        self._settle()
        self._waiting.close()

    def __await__(self) -> Generator[Any, None, T]:
        return self

    def __iter__(self) -> Acquisition[T]:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def _settle(self) -> None:
        """The fence will not be handed over: withdraw the request or give back its grant."""
        if self._settled:
            return
        self._settled = True
        grant = self._grant
        if not grant.done():
            grant.cancel()
        elif not grant.cancelled() and grant.exception() is None:
            self._give_back(grant.result())
