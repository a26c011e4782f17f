"""Client (the blocking facade) against a real StateServer running in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from client_servers import eventually_sync, threaded_server
from statehub import (
    Client,
    ConnectionLostError,
    DictionaryChange,
    LockFailedError,
    ResourceLockedError,
)
from statehub.cli import main
from statehub.serving.state_server import StateServer


@pytest.fixture
def server() -> Iterator[StateServer]:
    running = threaded_server()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def client(server: StateServer) -> Iterator[Client]:
    with Client("127.0.0.1", server.port) as connected:
        yield connected


@pytest.fixture
def other(server: StateServer) -> Iterator[Client]:
    with Client("127.0.0.1", server.port) as connected:
        yield connected


def test_basics_keep_exact_types(client: Client, other: Client) -> None:
    revision = client.set("int", 1)
    assert client.update({"float": 1.0, "big": 2**90}, removals=["int"]) == revision + 1
    assert other.get("int", "gone") == "gone"
    assert type(other.get("float")) is float and other.get("big") == 2**90
    assert other.remove("float") == revision + 2
    assert other.get_all() == {"big": 2**90}


def test_subscribe_and_mirror(client: Client, other: Client) -> None:
    client.set("a", 1)
    other.subscribe_all_state_updates(1 / 30)
    assert other.copy_state() == {"a": 1}
    changes = other.subscribe(interval=0, prefix="a")
    assert next(changes).updates == {"a": 1}
    client.update({"a": 2, "b": 3})
    assert next(changes).updates == {"a": 2}
    changes.close()
    eventually_sync(lambda: other.copy_state() == {"a": 2, "b": 3})
    with other.lock_state() as state:
        assert state["b"] == 3


def test_leases_and_nanover_calls(server: StateServer, client: Client, other: Client) -> None:
    server.register_command("echo", lambda **kw: kw, {"x": 1})
    assert "echo" in other.available_commands
    assert other.run_command("echo", y=2) == {"x": 1, "y": 2}
    assert client.attempt_update_locks({"k": 30})
    assert not other.attempt_update_state(DictionaryChange({"k": 1}))
    with pytest.raises(ResourceLockedError):
        other.set("k", 1)
    (lease,) = other.leases()
    assert (lease.key, lease.mine) == ("k", False)
    with pytest.warns(DeprecationWarning, match=r"Client\.list_leases\(\) is deprecated"):
        former = other.list_leases()
    assert [(key, mine) for key, mine, _ in former] == [("k", False)]
    assert client.attempt_update_locks({"k": None})
    assert other.attempt_update_state(DictionaryChange({"k": 1}))


def test_locks_belong_to_threads(client: Client) -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with client.get_lock("job"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    assert not client.test_lock("job")
    with pytest.raises(LockFailedError), client.get_lock("job", timeout=0.1):
        pytest.fail("two threads held one exclusive lock")
    release.set()
    thread.join()
    with client.get_lock("job", timeout=1), client.get_lock("other", exclusive=False):
        assert client.test_lock("other", exclusive=False)


def test_server_gone_gives_connection_lost() -> None:
    server = threaded_server()
    client = Client("127.0.0.1", server.port, reconnect=False)
    try:
        client.set("a", 1)
        server.close()
        eventually_sync(lambda: not client.connected)
        with pytest.raises(ConnectionLostError):
            client.get("a")
    finally:
        client.close()


def test_reconnects_after_a_restart_on_the_same_port() -> None:
    server = threaded_server()
    port = server.port
    lost: list[list[str]] = []
    with Client("127.0.0.1", port, backoff_initial=0.02, backoff_max=0.2) as client:
        client.leases_lost.add_callback(lambda keys: lost.append(keys))
        assert client.attempt_update_locks({"mine": 60})
        server.close()
        eventually_sync(lambda: not client.connected)
        server = threaded_server(port)
        try:
            client.wait_connected(timeout=10)
            assert lost == [["mine"]]
            client.set("after", 1)
            assert client.get("after") == 1
        finally:
            server.close()


def test_lock_state_holds_the_mirror_still(client: Client, other: Client) -> None:
    other.subscribe_all_state_updates(0)
    mirror = other.aio._mirror._subscription
    assert mirror is not None
    with other.lock_state() as state:
        revision = client.set("during", 1)
        # The batch has reached this client, yet the mirror holds still until the block ends.
        eventually_sync(lambda: mirror.revision == revision)
        assert "during" not in state
    eventually_sync(lambda: other.copy_state() == {"during": 1})


@pytest.mark.parametrize("scheme", ["statehub+tcp", "ws"])
def test_the_blocking_client_and_the_cli_speak_every_transport(scheme: str) -> None:
    with StateServer(address="127.0.0.1", port=0, tcp_port=0, http_port=0) as server:
        port = server.tcp_port if scheme == "statehub+tcp" else server.http_port
        url = f"{scheme}://127.0.0.1:{port}"
        client = Client(url)
        try:
            client.set("k", [1, 2])
            assert client.get("k") == [1, 2]
            assert server.copy_state() == {"k": [1, 2]}
        finally:
            client.close()
        result = CliRunner().invoke(main, ["set", "from.cli", "4"], env={"STATEHUB_URL": url})
        assert result.exit_code == 0, result.output
        assert server.state.get("from.cli") == 4
