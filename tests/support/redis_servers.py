"""Fixtures for the store tests: a real redis-server per test, state dictionaries over
any store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from statehub.bench.fleet import RedisProcess, start_redis, stop
from statehub.store.redis import RedisStore
from statehub.store.sqlite import SQLiteStore
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


@asynccontextmanager
async def opened(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StateDictionary]:
    """A state dictionary over a store of ``kind``: memory, sqlite or redis (a real
    server for the test, through the ``redis_server`` fixture)."""
    if kind == "memory":
        yield StateDictionary()
    elif kind == "sqlite":
        with SQLiteStore(tmp_path / "data") as store:
            yield StateDictionary(store=store)
    else:
        server: RedisProcess = request.getfixturevalue("redis_server")
        async with started_state(server.url) as state:
            yield state
