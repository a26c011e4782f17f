"""Seeing what is on a server: keys, values by prefix, leases, locks, sessions (API and CLI)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from statehub import AsyncClient, Client, DictionaryChange, SQLiteStore, StateDictionary
from statehub.cli import main
from statehub.client.listing import LockHolder
from statehub.serving.state_server import StateServer
from support.client_servers import free_port, threaded_server
from support.polling import eventually, eventually_sync

DEADLINE = 20.0
WATCH = [sys.executable, "-c", "from statehub.cli import main; main()", "watch"]
CONTENT = {"scene.a": 1, "scene.b": {"x": [1, 2]}, "other": "text"}


@pytest.fixture
def server() -> Iterator[StateServer]:
    running = threaded_server()
    running.update_state(None, DictionaryChange(dict(CONTENT)))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
async def client(server: StateServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient("127.0.0.1", server.port, name="alice") as connected:
        yield connected


async def test_keys_and_values_by_prefix(client: AsyncClient) -> None:
    assert await client.keys() == ["other", "scene.a", "scene.b"]
    assert await client.keys("scene.") == ["scene.a", "scene.b"]
    assert await client.keys("nothing.") == []
    assert await client.get_prefix("scene.") == {"scene.a": 1, "scene.b": {"x": [1, 2]}}
    assert await client.get_many(["scene.a", "missing", "other"]) == {
        "scene.a": 1,
        "other": "text",
    }
    with pytest.raises(TypeError, match="keys must be str"):
        await client.keys(1)  # type: ignore[arg-type]


async def test_leases_say_whose_and_how_long(server: StateServer, client: AsyncClient) -> None:
    assert await client.attempt_update_locks({"scene.a": 30, "scene.b": None})
    server.update_locks("someone else", {"other": None})
    leases = {lease.key: lease for lease in await client.leases()}
    assert set(leases) == {"scene.a", "other"}
    assert leases["scene.a"].mine and 0 < (leases["scene.a"].seconds_left or 0) <= 30
    assert not leases["other"].mine and leases["other"].seconds_left is None


async def test_locks_show_mode_holders_and_waiters(
    server: StateServer, client: AsyncClient
) -> None:
    async with AsyncClient("127.0.0.1", server.port, name="bob") as bob:
        async with (
            client.get_lock("shared.k", exclusive=False),
            bob.get_lock("shared.k", exclusive=False),
        ):
            async with client.get_lock("solo.k"):
                waiter = asyncio.ensure_future(bob.acquire_lock("solo.k", "bob-task", True, None))
                await eventually_locks(client, lambda locks: locks["solo.k"].waiting == 1)
                locks = {lock.key: lock for lock in await client.locks()}
                assert locks["solo.k"].mode == "exclusive" and locks["solo.k"].mine
                assert [h.client for h in locks["solo.k"].holders] == ["alice"]
                assert locks["shared.k"].mode == "shared"
                assert sorted(h.client for h in locks["shared.k"].holders) == ["alice", "bob"]
                bob_view = {lock.key: lock for lock in await bob.locks()}
                assert not bob_view["solo.k"].mine and bob_view["shared.k"].mine
            held = await asyncio.wait_for(waiter, DEADLINE)
            await bob.release_lock(held)
        assert {lock.key for lock in await client.locks()} == set()


async def eventually_locks(client: AsyncClient, condition: object) -> None:

    async def reached() -> bool:
        locks = {lock.key: lock for lock in await client.locks()}
        return "solo.k" in locks and bool(condition(locks))  # type: ignore[operator]

    await eventually(reached, "the lock list showing solo.k's waiter", timeout=DEADLINE)


async def test_sessions_list_every_client_and_mark_ours(
    server: StateServer, client: AsyncClient
) -> None:
    async with (
        AsyncClient("127.0.0.1", server.port, name="bob") as bob,
        bob.subscribe(prefix="scene.") as changes,
    ):
        await changes.__anext__()
        sessions = await client.sessions()
    assert sorted(s.client for s in sessions) == ["alice", "bob"]
    ours = next(s for s in sessions if s.you)
    assert ours.client == "alice" and ours.session == client.session
    theirs = next(s for s in sessions if not s.you)
    assert theirs.subscriptions == 1 and "127.0.0.1" in theirs.peer


def test_the_blocking_client_has_the_same_calls(server: StateServer) -> None:
    with Client("127.0.0.1", server.port, name="carol") as client:
        assert client.keys("scene.") == ["scene.a", "scene.b"]
        assert client.get_prefix("other") == {"other": "text"}
        assert client.get_many(["scene.a"]) == {"scene.a": 1}
        assert client.attempt_update_locks({"scene.a": 10})
        assert [lease.key for lease in client.leases()] == ["scene.a"]
        with client.get_lock("k"):
            assert client.locks()[0].holders == (LockHolder(client.session or "", "carol"),)
        assert [s.client for s in client.sessions()] == ["carol"]


def _cli(server: StateServer, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "-h", "127.0.0.1", "-p", str(server.port)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_keys_json_and_table(server: StateServer) -> None:
    assert json.loads(_cli(server, "keys", "-o", "json")) == ["other", "scene.a", "scene.b"]
    assert json.loads(_cli(server, "keys", "scene.", "--values", "-o", "json")) == {
        "scene.a": 1,
        "scene.b": {"x": [1, 2]},
    }
    table = _cli(server, "keys", "scene.", "--values").splitlines()
    assert table[0].split() == ["key", "value"]
    assert table[2].split(maxsplit=1) == ["scene.b", '{"x": [1, 2]}']


def test_cli_leases_locks_sessions(server: StateServer) -> None:
    server.update_locks("someone", {"scene.a": 60})
    leases = json.loads(_cli(server, "leases", "-o", "json"))
    assert [lease["key"] for lease in leases] == ["scene.a"]
    assert "scene.a" in _cli(server, "leases")
    with Client("127.0.0.1", server.port, name="holder") as holder, holder.get_lock("lab.pump"):
        locks = json.loads(_cli(server, "locks", "-o", "json"))
        assert [(lock["key"], lock["mode"]) for lock in locks] == [("lab.pump", "exclusive")]
        assert locks[0]["holders"][0]["client"] == "holder"
        assert "holder" in _cli(server, "locks")
        sessions = json.loads(_cli(server, "sessions", "-o", "json"))
        # Not the command's own; earlier commands' sessions may still be ending.
        clients = [s["client"] for s in sessions]
        assert "holder" in clients and set(clients) <= {"holder", "statehub-cli"}
        assert len(clients) < 1 + len(server.hub.sessions)
    assert json.loads(_cli(server, "locks", "-o", "json")) == []


def test_watch_prints_no_empty_batch_after_a_reconnect(tmp_path: Path) -> None:
    """A resume that finds nothing new prints nothing: the next line is the next change."""
    port = free_port()

    def durable_server() -> StateServer:
        state = StateDictionary(store=SQLiteStore(tmp_path / "data"))
        return StateServer(
            address="127.0.0.1", port=port, grpc_port=0, state=state
        ).start_in_thread()

    first = durable_server()
    first.update_state(None, DictionaryChange({"w.a": 1}))
    watch = subprocess.Popen(
        [*WATCH, "w.", "-h", "127.0.0.1", "-p", str(port), "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = None
    try:
        assert watch.stdout is not None
        assert json.loads(watch.stdout.readline())["updates"] == {"w.a": 1}
        first.close()
        first.state._store.close()  # the next server opens the same data file
        second = durable_server()
        eventually_sync(lambda: any(s.client == "statehub-cli" for s in second.hub.sessions))
        subscribed = lambda: any(s._subscriptions for s in second.hub.sessions)  # noqa: E731
        eventually_sync(subscribed)
        second.update_state(None, DictionaryChange({"w.b": 2}))
        out, err = watch.communicate(timeout=DEADLINE)
        assert watch.returncode == 0, err
        line = json.loads(out.splitlines()[0])
        assert (line["snapshot"], line["updates"], line["removals"]) == (False, {"w.b": 2}, [])
        assert "reconnected" in err
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        if second is not None:
            second.close()


def test_endpoint_commands_take_output() -> None:
    from statehub.endpoints.attach import attach_endpoints
    from statehub.endpoints.config import load_config

    server = threaded_server()
    config = load_config(Path(__file__).parent / "fixtures" / "endpoints_dripline.yaml")
    service = attach_endpoints(server, config)
    try:
        listed = json.loads(_cli(server, "endpoint", "list", "-o", "json"))
        assert listed == ["my_store.peaches", "my_store.peaches_status"]
        table = _cli(server, "endpoint", "set", "peaches", "3", "-o", "table").splitlines()
        assert [line.split() for line in table] == [
            ["field", "value"],
            ["value_raw", "3"],
            ["value_cal", "6"],
        ]
    finally:
        server.close()
        service.close()
