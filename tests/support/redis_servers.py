"""Fixtures for the Redis store's tests: a real redis-server per test, stores over it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from statehub.bench.fleet import RedisProcess, start_redis, stop
from statehub.store.redis import RedisStore
from statehub.store.state_dictionary import StateDictionary

#: Short liveness settings so that a dead server is swept quickly in tests.
FAST_LIVENESS: dict[str, Any] = {"liveness_ttl": 1.0, "heartbeat": 0.2}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server without persistence on a free port, stopped after the test."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        stop(server.process)


@asynccontextmanager
async def started_state(url: str, **options: Any) -> AsyncIterator[StateDictionary]:
    """A state dictionary over a started RedisStore (following the history)."""
    store = RedisStore(url, **{**FAST_LIVENESS, **options})
    state = StateDictionary(store=store)
    await state.start()
    try:
        yield state
    finally:
        await state.stop()
        store.close()


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll ``predicate`` (a callable) until it is true; fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


async def until_async(ask: Any, expected: object, timeout: float = 10.0) -> None:
    """Poll ``await ask()`` until it returns ``expected``; fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await ask() != expected:
        if loop.time() > deadline:
            raise AssertionError(f"no {expected!r} within {timeout} s")
        await asyncio.sleep(0.01)
