"""The history of any key through real servers: both clients, the session op, the CLI
(keys and endpoints under one `statehub history`), rights, and a --data restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from statehub import AsyncClient, Client, DictionaryChange, StateDictionary
from statehub.bench.fleet import start_serve, stop
from statehub.cli import main
from statehub.core.key_history import HistoryRetention
from statehub.serving.state_server import StateServer


async def test_history_over_the_session_protocol() -> None:
    state = StateDictionary(history=HistoryRetention(versions=3))
    server = StateServer(address="127.0.0.1", port=0, state=state)
    async with server, AsyncClient("127.0.0.1", server.port) as client:
        first = await client.set("k", 1)
        await client.set("k", {"a": [1, 2]})
        await client.remove("k")
        last = await client.set("k", 4, ttl=600)
        versions = await client.history("k")
        assert [(v.revision, v.value, v.removed) for v in versions] == [
            (first + 1, {"a": [1, 2]}, False),
            (first + 2, None, True),
            (last, 4, False),
        ]
        assert all(v.identity == "anyone" for v in versions)
        assert all(v.session is not None and len(v.session) == 32 for v in versions)
        assert [v.revision for v in await client.history("k", limit=1)] == [last]
        assert [v.revision for v in await client.history("k", since=first + 1)] == [
            first + 2,
            last,
        ]
        assert await client.history("never") == []
        with pytest.raises(ValueError, match="history limit"):
            await client.history("k", limit=-1)
        reply = await client._request("history", key="k", limit=0)
        assert reply["retention"] == {"versions": 3, "age": None}


async def test_a_server_without_history_says_so() -> None:
    server = StateServer(address="127.0.0.1", port=0)
    async with server, AsyncClient("127.0.0.1", server.port) as client:
        await client.set("k", 1)
        assert await client.history("k") == []
        reply = await client._request("history", key="k")
        assert reply["retention"]["versions"] == 0


def test_the_blocking_client_and_the_cli() -> None:
    state = StateDictionary(history=HistoryRetention(versions=10))
    running = StateServer(address="127.0.0.1", port=0, state=state).start_in_thread()
    try:
        with Client("127.0.0.1", running.port) as client:
            client.set("k", 1)
            client.set("k", 2)
            assert [v.value for v in client.history("k")] == [1, 2]
        state.update_state("in-process", DictionaryChange({}, {"k"}))
        port = ["--host", "127.0.0.1", "--port", str(running.port)]
        result = CliRunner().invoke(main, ["history", "k", "--json", *port])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [row.get("value") for row in rows] == [1, 2, None]
        assert rows[-1]["removed"] is True and rows[-1]["by"] == "in-process"
        result = CliRunner().invoke(main, ["history", "k", "--since-revision", "2", *port])
        lines = result.stdout.splitlines()
        assert len(lines) == 1 and "revision 3  removed  by in-process" in lines[0]
        result = CliRunner().invoke(main, ["history", "k", "--limit", "1", "--key", *port])
        assert "removed" in result.stdout and len(result.stdout.splitlines()) == 1
    finally:
        running.close()


async def test_history_survives_a_restart_with_data(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    process, port = start_serve("--data", data, "--history", "2")
    try:
        async with AsyncClient("127.0.0.1", port) as client:
            for value in range(3):
                await client.set("k", value)
            before = await client.history("k")
    finally:
        stop(process)
    assert [v.value for v in before] == [1, 2]
    process, port = start_serve("--data", data, "--history", "2", "--history-age", "3600")
    try:
        async with AsyncClient("127.0.0.1", port) as client:
            assert await client.history("k") == before
    finally:
        stop(process)


def test_serve_refuses_bad_history_settings() -> None:
    result = CliRunner().invoke(main, ["serve", "--history-prefix", "log.=many"])
    assert result.exit_code == 2 and "PREFIX=N" in result.output
    result = CliRunner().invoke(main, ["serve", "--history-age", "60"])
    assert result.exit_code == 2 and "--history-age needs" in result.output
