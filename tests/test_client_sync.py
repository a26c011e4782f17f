"""Client (the blocking facade) against a real StateServer running in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from statehub import (
    Client,
    ConnectionLostError,
    DictionaryChange,
    LockFailedError,
    ResourceLockedError,
)
from statehub.cli import main
from statehub.serving.state_server import StateServer
from support.client_servers import threaded_server
from support.polling import eventually_sync
from support.transports import TCP, Transport


@pytest.fixture
def server() -> Iterator[StateServer]:
    running = threaded_server()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def url(server: StateServer, transport: Transport) -> str:
    """The blocking client over plain TCP (its own I/O) and gRPC (a background event loop)."""
    return transport.url(server)


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as connected:
        yield connected


@pytest.fixture
def other(url: str) -> Iterator[Client]:
    with Client(url) as connected:
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


def test_server_gone_gives_connection_lost(transport: Transport) -> None:
    server = threaded_server()
    client = Client(transport.url(server), reconnect=False)
    try:
        client.set("a", 1)
        server.close()
        eventually_sync(lambda: not client.connected)
        with pytest.raises(ConnectionLostError):
            client.get("a")
    finally:
        client.close()


def test_reconnects_after_a_restart_on_the_same_port(transport: Transport) -> None:
    server = threaded_server()
    port, grpc_port = server.tcp_port, server.grpc_port
    lost: list[list[str]] = []
    url = transport.url(server)
    with Client(url, backoff_initial=0.02, backoff_max=0.2) as client:
        client.leases_lost.add_callback(lambda keys: lost.append(keys))
        assert client.attempt_update_locks({"mine": 60})
        server.close()
        eventually_sync(lambda: not client.connected)
        server = threaded_server(port, grpc_port)
        try:
            client.wait_connected(timeout=10)
            assert lost == [["mine"]]
            client.set("after", 1)
            assert client.get("after") == 1
        finally:
            server.close()


def test_lock_state_holds_the_mirror_still(client: Client, other: Client) -> None:
    other.subscribe_all_state_updates(0)
    mirror = other._mirror_subscription
    assert mirror is not None
    with other.lock_state() as state:
        revision = client.set("during", 1)
        # The batch has reached this client, yet the mirror holds still until the block ends.
        eventually_sync(lambda: mirror.revision == revision)
        assert "during" not in state
    eventually_sync(lambda: other.copy_state() == {"during": 1})


@pytest.mark.parametrize("scheme", ["statehub+tcp", "statehub+grpc", "ws"])
def test_the_blocking_client_and_the_cli_speak_every_transport(scheme: str) -> None:
    with StateServer(address="127.0.0.1", port=0, http_port=0) as server:
        ports = {"statehub+tcp": server.tcp_port, "statehub+grpc": server.grpc_port}
        url = f"{scheme}://127.0.0.1:{ports.get(scheme, server.http_port)}"
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


def test_subscriptions_resume_after_the_server_restarts_over_tcp() -> None:
    server = threaded_server()
    port, grpc_port = server.tcp_port, server.grpc_port
    restored = threading.Event()
    with Client(TCP.url(server), backoff_initial=0.02, backoff_max=0.2) as client:
        client.reconnected.add_callback(restored.set)
        client.set("a", 1)
        changes = client.subscribe(prefix="")
        assert next(changes).updates == {"a": 1}
        client.subscribe_all_state_updates()
        server.close()
        eventually_sync(lambda: not client.connected)
        server = threaded_server(port, grpc_port)
        try:
            # Nobody calls: the client's helper thread reconnects and resubscribes.
            assert restored.wait(10)
            server.state.update_state(None, DictionaryChange({"fresh": True}))
            change = next(changes)
            assert change.snapshot  # another history: a snapshot, not a delta
            if change.updates != {"fresh": True}:  # the snapshot came before the write
                assert change.updates == {}
                change = next(changes)
            assert change.updates == {"fresh": True}
            eventually_sync(lambda: client.copy_state() == {"fresh": True})
            client.set("b", 2)
            assert next(changes).updates == {"b": 2}
            changes.close()
        finally:
            server.close()


def test_one_client_serves_many_threads_at_once(server: StateServer, transport: Transport) -> None:
    errors: list[BaseException] = []
    with Client(transport.url(server)) as client:

        def work(number: int) -> None:
            try:
                for step in range(200):
                    key = f"t{number}.{step % 5}"
                    revision = client.set(key, [number, step])
                    assert client.get(key) == [number, step] and revision > 0
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work, args=(number,)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors[:3]
        assert len(client.keys("t")) == 8 * 5
