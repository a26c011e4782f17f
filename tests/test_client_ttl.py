"""Keys that expire, through real servers: clients, the CLI, the change feed, --data
restarts, bad input over the wire, and Redis's refusal (not kept there yet)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from statehub import AsyncClient, Client
from statehub.bench.fleet import start_serve, stop
from statehub.cli import main
from statehub.serving.state_server import StateServer
from support.client_servers import threaded_server
from support.polling import eventually


async def test_a_key_expires_as_a_removal_every_subscriber_sees(
    client: AsyncClient, server: StateServer
) -> None:
    async with AsyncClient("127.0.0.1", server.port) as watcher:
        stream = watcher.subscribe()
        changes = aiter(stream)
        first = await anext(changes)
        assert first.updates == {}
        written = await client.update({"short": 1, "kept": 2}, ttl={"short": 0.2})
        seen = await anext(changes)
        assert seen.updates == {"short": 1, "kept": 2}
        entry = await client.entry("short")
        assert entry is not None and entry.expires_in is not None
        assert 0 < entry.expires_in <= 0.2
        assert (await client.entry("kept")).expires_in is None  # type: ignore[union-attr]
        gone = await asyncio.wait_for(anext(changes), 10)
        assert gone.removals == {"short"} and not gone.updates
        assert gone.revision == written + 1  # its own revision
        await stream.aclose()
    assert await client.get_prefix("") == {"kept": 2}


async def test_a_write_without_ttl_clears_it(client: AsyncClient, server: StateServer) -> None:
    await client.set("k", 1, ttl=0.3)
    await client.set("k", 2)
    assert (await client.entry("k")).expires_in is None  # type: ignore[union-attr]
    await client.set("marker", 1, ttl=0.3)
    await eventually(lambda: _absent(client, "marker"))
    assert await client.get("k") == 2


async def _absent(client: AsyncClient, key: str) -> bool:
    return await client.entry(key) is None


async def test_bad_ttls_name_the_key_and_apply_nothing(
    client: AsyncClient, server: StateServer
) -> None:
    for bad in (0, -1, math.nan):
        with pytest.raises(ValueError, match="ttl of key 'k'"):
            await client.set("k", 1, ttl=bad)
        # The server checks too, for clients that do not.
        with pytest.raises(ValueError, match="ttl of key 'k'"):
            await client._request("update", updates={"k": 1, "j": 1}, ttl={"k": bad})
    with pytest.raises(ValueError, match="does not set"):
        await client._request("update", updates={"k": 1}, ttl={"z": 1})
    with pytest.raises(TypeError, match="'ttl' must be a map"):
        await client._request("update", updates={"k": 1}, ttl=[1])
    assert server.state.copy_content() == {} and server.state.revision == 0


def test_the_blocking_client_and_the_cli() -> None:
    running = threaded_server()
    try:
        with Client("127.0.0.1", running.port) as client:
            client.update({"a": 1}, ttl={"a": 60})
            entry = client.entry("a")
            assert entry is not None and entry.expires_in is not None
            assert 59 < entry.expires_in <= 60
        port = ["--host", "127.0.0.1", "--port", str(running.port)]
        result = CliRunner().invoke(main, ["set", "b", "2", "--ttl", "30", *port])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(main, ["keys", "--long", "-o", "json", *port])
        listed = {row["key"]: row for row in json.loads(result.stdout)}
        assert 29 < listed["b"]["expires_in"] <= 30
        assert 59 < listed["a"]["expires_in"] <= 60
        result = CliRunner().invoke(main, ["set", "b", "2", "--ttl", "-1", *port])
        assert result.exit_code == 1 and "ttl of key 'b'" in result.stderr
        result = CliRunner().invoke(main, ["keys", "--long", *port])
        assert result.stdout.splitlines()[0].split()[-1] == "expires_in"
    finally:
        running.close()


async def test_deadlines_survive_a_restart_with_data(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    process, port = start_serve("--data", data)
    try:
        async with AsyncClient("127.0.0.1", port) as client:
            await client.update({"long": 1, "soon": 2, "plain": 3}, ttl={"long": 600, "soon": 1})
    finally:
        stop(process)
    process, port = start_serve("--data", data)
    try:
        async with AsyncClient("127.0.0.1", port) as client:
            entry = await client.entry("long")
            assert entry is not None and entry.expires_in is not None
            assert 500 < entry.expires_in <= 600
            assert (await client.entry("plain")).expires_in is None  # type: ignore[union-attr]
            # "soon" expires by the same absolute deadline, whether before or after the
            # restart: eventually it is gone, and the others stay.
            await eventually(lambda: _absent(client, "soon"))
            assert await client.get_prefix("") == {"long": 1, "plain": 3}
    finally:
        stop(process)
