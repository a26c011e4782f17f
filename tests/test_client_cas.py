"""Compare-and-set and per-key facts through real servers: clients, CLI, restarts, and a
lost-update test on every store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from statehub import AsyncClient, Client, ConflictError, Entry
from statehub.bench.fleet import RedisProcess, start_serve, start_statehub, stop
from statehub.cli import main
from statehub.serving.state_server import StateServer
from support.client_servers import threaded_server
from support.redis_servers import redis_server

__all__ = ["redis_server"]  # the fixture, used by name

#: Seconds the lost-update test's clients keep incrementing, per store.
RACE_S = 3.0
RACERS = 12


async def test_set_if_absent_and_if_revision(client: AsyncClient) -> None:
    made = await client.set("k", 1, if_absent=True)
    with pytest.raises(ConflictError) as caught:
        await client.set("k", 2, if_absent=True)
    assert caught.value.current == {"k": made}  # its details crossed the network
    assert str(caught.value) == (
        f"compare-and-set failed, nothing applied: 'k' is at revision {made} (expected absent)"
    )
    changed = await client.set("k", 2, if_revision=made)
    with pytest.raises(ConflictError, match=f"'k' is at revision {changed} "):
        await client.set("k", 3, if_revision=made)
    assert await client.get("k") == 2
    assert await client.entry("k") == Entry("k", 2, changed, made, 2)
    assert await client.entry("nothing") is None


async def test_update_with_expectations_and_conditional_remove(client: AsyncClient) -> None:
    made = await client.update({"a": 1, "b": 1})
    with pytest.raises(ConflictError) as caught:
        await client.update({"a": 2, "c": 2}, ["b"], expect={"a": made, "b": made, "c": made})
    assert caught.value.current == {"c": None}
    assert await client.get_prefix("") == {"a": 1, "b": 1}
    both = await client.update({"a": 2, "c": 2}, ["b"], expect={"a": made, "b": made, "c": None})
    assert await client.get_prefix("") == {"a": 2, "c": 2}
    with pytest.raises(ConflictError, match="'a' is at revision"):
        await client.remove("a", if_revision=made)
    assert await client.remove("a", if_revision=both) == both + 1
    assert [entry.key for entry in await client.entries()] == ["c"]
    assert await client.entries("c") == [Entry("c", 2, both, both, 1)]


async def test_remove_says_whether_there_was_a_key(client: AsyncClient) -> None:
    assert await client.remove("gone") == 0  # missing_ok (the default): as before, no change
    with pytest.raises(KeyError, match="no key 'gone'"):
        await client.remove("gone", missing_ok=False)
    made = await client.set("here", 1)
    with pytest.raises(KeyError, match="no key 'gone'"):
        await client.remove("gone", if_revision=made, missing_ok=False)
    changed = await client.set("here", 2)
    with pytest.raises(ConflictError):
        await client.remove("here", if_revision=made, missing_ok=False)
    assert await client.remove("here", missing_ok=False) > changed
    assert await client.entry("here") is None


async def test_bad_expectations(client: AsyncClient, server: StateServer) -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        await client.set("k", 1, if_absent=True, if_revision=3)
    with pytest.raises(ValueError, match="neither sets nor removes"):
        await client.update({"k": 1}, expect={"other": None})
    # The server checks too, for clients that do not.
    with pytest.raises(ValueError, match="neither sets nor removes"):
        await client._request("update", updates={"k": 1}, expect={"other": None})
    with pytest.raises(TypeError, match="'expect' must be a map"):
        await client._request("update", updates={"k": 1}, expect=[1])
    with pytest.raises(TypeError, match="must be an int or None"):
        await client._request("update", updates={"k": 1}, expect={"k": 1.5})
    assert server.state.copy_content() == {}


def test_the_blocking_client() -> None:
    running = threaded_server()
    try:
        with Client("127.0.0.1", running.port) as client:
            made = client.set("k", 1, if_absent=True)
            with pytest.raises(ConflictError):
                client.set("k", 2, if_revision=made + 1)
            changed = client.update({"k": 2}, expect={"k": made})
            assert client.entry("k") == Entry("k", 2, changed, made, 2)
            assert client.entries() == [Entry("k", 2, changed, made, 2)]
            client.remove("k", if_revision=changed)
            assert client.entry("k") is None
    finally:
        running.close()


def cli(port: int, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--host", "127.0.0.1", "--port", str(port)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def blocking_server() -> Iterator[StateServer]:
    running = threaded_server()
    try:
        yield running
    finally:
        running.close()


def test_cli_set_if_absent_and_if_revision(blocking_server: StateServer) -> None:
    port = blocking_server.port
    code, out, _ = cli(port, "set", "cli.cas", "1", "--if-absent")
    assert code == 0
    made = int(out.split()[1])
    code, _, err = cli(port, "set", "cli.cas", "2", "--if-absent")
    assert code == 1
    assert err.strip() == (
        "Error: ConflictError: compare-and-set failed, nothing applied: "
        f"'cli.cas' is at revision {made} (expected absent)"
    )
    code, out, _ = cli(port, "set", "cli.cas", "2", "--if-revision", str(made))
    assert code == 0
    changed = int(out.split()[1])
    code, _, err = cli(port, "set", "cli.cas", "3", "--if-revision", str(made))
    assert code == 1 and f"'cli.cas' is at revision {changed} (expected revision {made})" in err
    code, _, err = cli(port, "set", "cli.cas", "3", "--if-revision", "1", "--if-absent")
    assert code == 2 and "exclude each other" in err
    code, _, err = cli(port, "set", "cli.cas", "3", "--if-revision", "0")
    assert code == 2 and "--if-revision" in err
    code, _, err = cli(port, "rm", "cli.cas", "--if-revision", str(made))
    assert code == 1 and "ConflictError" in err
    assert cli(port, "get", "cli.cas")[1].strip() == "2"
    code, out, _ = cli(port, "keys", "cli.cas", "--long", "-o", "json")
    assert code == 0
    assert json.loads(out) == [
        {"key": "cli.cas", "mod_revision": changed, "create_revision": made, "version": 2}
    ]
    code, out, _ = cli(port, "keys", "cli.cas", "--long", "--values")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["key", "revision", "created", "version", "value"]
    assert row.split() == ["cli.cas", str(changed), str(made), "2", "2"]
    assert cli(port, "rm", "cli.cas", "--if-revision", str(changed))[0] == 0
    assert cli(port, "get", "cli.cas")[0] == 1


async def race(ports: list[int]) -> tuple[int, int, Entry | None]:
    """RACERS clients (spread over ``ports``) each read-modify-write a counter with
    compare-and-set, retrying on conflict, for RACE_S seconds: (successes, conflicts, entry)."""
    clients = [AsyncClient("127.0.0.1", ports[i % len(ports)]) for i in range(RACERS)]
    for each in clients:
        await each.connect()
    successes = conflicts = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RACE_S

    async def increment(client: AsyncClient) -> None:
        nonlocal successes, conflicts
        while loop.time() < deadline:
            entry = await client.entry("counter")
            try:
                if entry is None:
                    await client.set("counter", 1, if_absent=True)
                else:
                    assert isinstance(entry.value, int)
                    await client.set("counter", entry.value + 1, if_revision=entry.mod_revision)
            except ConflictError:
                conflicts += 1
            else:
                successes += 1

    try:
        await asyncio.gather(*(increment(each) for each in clients))
        final = await clients[-1].entry("counter")
    finally:
        for each in clients:
            await each.close()
    return successes, conflicts, final


def assert_no_lost_update(successes: int, conflicts: int, final: Entry | None) -> None:
    assert final is not None
    assert conflicts > 0, "the racers never collided: the test proves nothing"
    assert final.value == successes  # every acknowledged increment, and no other
    assert final.version == successes and final.create_revision < final.mod_revision


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_no_lost_update_with_compare_and_set(store: str, tmp_path: Path) -> None:
    arguments = ["--data", str(tmp_path / "data")] if store == "sqlite" else []
    process, port = start_serve(*arguments)
    try:
        assert_no_lost_update(*await race([port]))
    finally:
        stop(process)


async def test_no_lost_update_with_compare_and_set_over_redis(
    redis_server: RedisProcess,
) -> None:
    servers = [start_statehub(redis_server.url) for _ in range(2)]
    try:
        assert_no_lost_update(*await race([port for _, port in servers]))
    finally:
        for process, _ in servers:
            stop(process)


async def test_facts_survive_a_restart_with_data(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    process, port = start_serve("--data", data)
    try:
        async with AsyncClient("127.0.0.1", port) as client:
            made = await client.set("k", 1, if_absent=True)
            await client.set("gone", 1)
            await client.remove("gone")
            changed = await client.set("k", 2, if_revision=made)
            again = await client.set("gone", 2, if_absent=True)
            before = await client.entries()
    finally:
        stop(process)
    assert before == [Entry("gone", 2, again, again, 1), Entry("k", 2, changed, made, 2)]
    process, port = start_serve("--data", data)
    try:
        async with AsyncClient("127.0.0.1", port) as client:
            assert await client.entries() == before
            with pytest.raises(ConflictError, match=f"'k' is at revision {changed}"):
                await client.set("k", 3, if_revision=made)
            assert await client.set("k", 3, if_revision=changed) > again
    finally:
        stop(process)
