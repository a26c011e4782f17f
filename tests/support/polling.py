"""Waiting for something with a deadline: the one way a test waits for a condition.

``await eventually(check)`` in a coroutine, ``eventually_sync(check)`` in a thread (or a
subprocess's script: this module needs only the standard library). ``check`` is polled
until it returns something true, which is returned; at the deadline the test fails with
a message naming what was awaited (``what``, or else the check's own source line), so a
timeout says which condition never came, not only that one did not.

A test that must show something did *not* happen should not wait here for nothing: it
makes something else happen after it (a second write), waits for that, then checks.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

#: Generous deadline for anything that should happen "soon" on a loaded machine.
DEADLINE = 10.0
#: Between two checks: short, so a test waits little longer than the condition takes.
INTERVAL = 0.01

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    what: str | None = None,
    *,
    timeout: float = DEADLINE,
    interval: float = INTERVAL,
) -> T:
    """Poll ``check`` (plain or async) until its result is true, and return that result;
    raise ``AssertionError`` naming ``what`` if ``timeout`` s pass first."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(check, what, timeout, result))
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T],
    what: str | None = None,
    *,
    timeout: float = DEADLINE,
    interval: float = INTERVAL,
) -> T:
    """``eventually`` for a thread that may block: polls with ``time.sleep``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(check, what, timeout, result))
        time.sleep(interval)


def _timed_out(check: Callable[..., object], what: str | None, timeout: float, last: object) -> str:
    return f"not within {timeout} s: {what or _describe(check)} (last check gave {last!r})"


def _describe(check: Callable[..., object]) -> str:
    """The check's source (a lambda's line) or its name: what the test was waiting for."""
    name = getattr(check, "__qualname__", repr(check))
    if name.endswith("<lambda>"):
        try:
            return inspect.getsource(check).strip()
        except (OSError, TypeError):
            pass
    return name
