"""The futures the store interface answers with.

Every asynchronous method of the store interface (``store/base.py``, ``store/locks.py``)
returns an ``asyncio.Future``, whichever store is behind it, so that event-loop code has
one way to call it: ``await``. An in-process store (memory, SQLite) has its answer at
once and returns it ``completed``: awaiting a done future does not suspend, and a caller
that can answer at once (a session replying to a request) reads ``done()`` and skips
the task it would otherwise need. A store shared by servers (Redis) returns the future of
its round trip, ``mapped`` into the answer's shape by a callback rather than a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def completed(value: T) -> asyncio.Future[T]:
    """A future already holding ``value`` (in the running event loop)."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def failed(error: Exception) -> asyncio.Future[Any]:
    """A future already holding ``error``."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


def settled(call: Callable[[], T]) -> asyncio.Future[T]:
    """A future already holding what ``call()`` returns, or the error it raises: an
    in-process store's answer, its errors delivered as a shared store's are."""
    try:
        return completed(call())
    except Exception as error:
        return failed(error)


def mapped(source: asyncio.Future[Any], convert: Callable[[Any], R]) -> asyncio.Future[R]:
    """A future of ``convert(source's result)``: its error if ``convert`` raises, the
    source's error or cancellation as they are. Done at once if ``source`` is; no task."""
    return chained(source, lambda value: settled(lambda: convert(value)))


def chained(
    source: asyncio.Future[Any], next_step: Callable[[Any], asyncio.Future[R]]
) -> asyncio.Future[R]:
    """A future of what ``next_step(source's result)`` settles with: a step that needs an
    answer first (a lease change that needs the leases held). At once if ``source`` is
    done (a done future's callbacks would wait for the loop's next turn); no task."""
    if source.done():
        if source.cancelled() or source.exception() is not None:
            return source
        try:
            return next_step(source.result())
        except Exception as error:
            return failed(error)
    target: asyncio.Future[R] = asyncio.get_running_loop().create_future()

    def follow(done: asyncio.Future[Any]) -> None:
        if target.done():  # cancelled by its waiter meanwhile
            return
        if done.cancelled():
            target.cancel()
        elif (error := done.exception()) is not None:
            target.set_exception(error)
        else:
            try:
                step = next_step(done.result())
            except Exception as failure:
                target.set_exception(failure)
                return
            step.add_done_callback(lambda settled_step: _copy(settled_step, target))

    source.add_done_callback(follow)
    return target


def _copy(source: asyncio.Future[R], target: asyncio.Future[R]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())
