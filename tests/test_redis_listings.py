"""Lock listings over Redis name their holders and say which are the viewer's own, as on
the memory store (before, every holder was ``{"session": "", "client": ""}``, mine false)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from statehub.bench.fleet import start_redis, stop
from statehub.client import AsyncClient
from statehub.serving.state_server import StateServer
from statehub.store.redis import RedisStore
from statehub.store.state_dictionary import StateDictionary
from support.redis_servers import FAST_LIVENESS


@asynccontextmanager
async def two_servers(tmp_path: Path) -> AsyncIterator[tuple[StateServer, StateServer]]:
    redis_process = start_redis(tmp_path / "redis")
    stores = [RedisStore(redis_process.url, **FAST_LIVENESS) for _ in range(2)]
    a, b = (StateServer(state=StateDictionary(store=store), port=0) for store in stores)
    try:
        async with a, b:
            yield a, b
    finally:
        for store in stores:
            store.close()
        stop(redis_process.process)


async def test_lock_listings_name_holders_and_mine_on_every_server(tmp_path: Path) -> None:
    async with (
        two_servers(tmp_path) as (a, b),
        AsyncClient("127.0.0.1", a.port, name="writer-on-a") as writer,
        AsyncClient("127.0.0.1", a.port, name="reader-on-a") as reader,
        AsyncClient("127.0.0.1", b.port, name="viewer-on-b") as viewer,
    ):
        async with writer.get_lock("w"), reader.get_lock("r", exclusive=False):
            (writer_session,) = [s.session for s in await writer.sessions() if s.you]
            mine = {lock.key: lock for lock in await writer.locks()}
            assert mine["w"].mine and not mine["r"].mine
            assert [(h.session, h.client) for h in mine["w"].holders] == [
                (writer_session, "writer-on-a")
            ]
            assert [h.client for h in mine["r"].holders] == ["reader-on-a"]

            # On the other server: the same holders, by session; none of them the viewer's.
            elsewhere = {lock.key: lock for lock in await viewer.locks()}
            assert set(elsewhere) == {"w", "r"}
            assert not elsewhere["w"].mine and elsewhere["w"].mode == "exclusive"
            assert [h.session for h in elsewhere["w"].holders] == [writer_session]
            assert elsewhere["r"].mode == "shared" and elsewhere["r"].holders[0].session
        assert await viewer.locks() == []
