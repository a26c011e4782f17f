"""The answers the store interface gives: ``Answer``, done at once or later.

Every method of the store interface that may wait on a shared store (``store/base.py``,
``store/locks.py``, the state dictionary's ``submit_*``) returns an ``Answer``, whichever
store is behind it, so that event-loop code has one way to call it: ``await``. A store
shared by servers (Redis) answers with the ``asyncio.Future`` of its round trip,
``mapped`` into the answer's shape by a callback rather than a task. An in-process store
(memory, SQLite) has its answer at once and returns it ``Completed``: awaiting it does not
suspend, a caller that can answer at once (a session replying to a request) reads
``done()`` and makes no task, and making one costs no event loop call (an
``asyncio.Future`` costs a loop look-up and a future per request, measurable on the
session's cheapest requests) and works from any thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R")


class Answer(Protocol[T_co]):
    """What ``asyncio.Future`` and ``Completed`` share: await it, or ask ``done()`` first."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def result(self) -> T_co: ...

    def exception(self) -> BaseException | None: ...

    def add_done_callback(self, callback: Callable[[Any], object], /) -> None: ...

    def __await__(self) -> Generator[Any, None, T_co]: ...


class Completed(Generic[T]):
    """An answer that is in: a value or an error, never cancelled. A callback added to it
    runs at once (it is done), not on the event loop's next turn."""

    __slots__ = ("_error", "_value")

    def __init__(self, value: T, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self) -> BaseException | None:
        return self._error

    def add_done_callback(self, callback: Callable[[Any], object], /) -> None:
        callback(self)

    def __await__(self) -> Generator[Any, None, T]:
        return self.result()
        yield  # a generator that never suspends: awaiting it costs no loop turn


def failed(error: BaseException) -> Completed[Any]:
    """The answer ``error``, in at once (raised where it is awaited or its result read)."""
    return Completed(None, error)


def settled(call: Callable[[], T]) -> Completed[T]:
    """What ``call()`` returns, or the error it raises, as an answer in at once: an
    in-process store's answer, its errors delivered as a shared store's are."""
    try:
        return Completed(call())
    except Exception as error:
        return Completed(None, error)  # type: ignore[arg-type]  # no value: the error is it


def mapped(source: Answer[Any], convert: Callable[[Any], R]) -> Answer[R]:
    """The answer ``convert(source's result)``: its error if ``convert`` raises, the
    source's error or cancellation as they are. In at once if ``source`` is; no task."""
    if not source.done():
        return chained(source, lambda value: Completed(convert(value)))
    if source.cancelled() or source.exception() is not None:
        return source
    try:
        return Completed(convert(source.result()))
    except Exception as error:
        return failed(error)


def chained(source: Answer[Any], next_step: Callable[[Any], Answer[R]]) -> Answer[R]:
    """The answer ``next_step(source's result)`` gives: a step that needs an answer first
    (a lease change that needs the leases held). In at once if ``source`` is done (an
    ``asyncio.Future``'s callbacks wait for the loop's next turn); no task either way."""
    if source.done():
        if source.cancelled() or source.exception() is not None:
            return source
        try:
            return next_step(source.result())
        except Exception as error:
            return failed(error)
    target: asyncio.Future[R] = asyncio.get_running_loop().create_future()

    def follow(done: Answer[Any]) -> None:
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
            step.add_done_callback(lambda settled_step: _copy_outcome(settled_step, target))

    source.add_done_callback(follow)
    return target


def _copy_outcome(source: Answer[R], target: asyncio.Future[R]) -> None:
    """Settle ``target`` as ``source`` settled (unless it is settled already)."""
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())
