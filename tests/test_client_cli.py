"""The client commands of the ``statehub`` CLI against a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from statehub import Client, DictionaryChange
from statehub.cli import main
from statehub.serving.state_server import StateServer
from support.client_servers import free_port, threaded_server


@pytest.fixture(scope="module")
def server() -> Iterator[StateServer]:
    running = threaded_server()
    running.register_command("add", lambda a, b=1: {"sum": a + b}, {"b": 1})
    try:
        yield running
    finally:
        running.close()


def cli(server_port: int, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--host", "127.0.0.1", "--port", str(server_port)])
    return result.exit_code, result.stdout, result.stderr


def test_set_get_rm(server: StateServer) -> None:
    code, out, _ = cli(
        server.port, "set", "cli.k", '{"a": [1, 2.0, null], "b": 18446744073709551616}'
    )
    assert code == 0 and out.startswith("revision ")
    code, out, _ = cli(server.port, "get", "cli.k")
    assert code == 0
    assert json.loads(out) == {"a": [1, 2.0, None], "b": 2**64}
    assert out.strip() == '{"a": [1, 2.0, null], "b": 18446744073709551616}'
    assert cli(server.port, "rm", "cli.k")[0] == 0
    code, out, err = cli(server.port, "get", "cli.k")
    assert code == 1 and err.strip() == "Error: no key 'cli.k' on the server"
    code, out, err = cli(server.port, "rm", "cli.k")
    assert (code, out) == (1, "")
    assert err.strip() == "Error: no key 'cli.k'"


def test_call_and_commands(server: StateServer) -> None:
    code, out, _ = cli(server.port, "call", "add", '{"a": 2}')
    assert code == 0 and json.loads(out) == {"sum": 3}
    code, out, _ = cli(server.port, "commands")
    assert code == 0 and ["add", '{"b":', "1}"] in [line.split() for line in out.splitlines()]
    code, out, _ = cli(server.port, "commands", "-o", "json")
    assert code == 0 and json.loads(out)["add"] == {"b": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set", "k", "{bad"), "Error: VALUE is not valid JSON"),
        (("set", "k", "nan-ish"), "Error: VALUE is not valid JSON"),
        (("call", "add", "[1]"), "Error: ARGUMENTS must be a JSON object, got list"),
        (("call", "add", "{"), "Error: ARGUMENTS is not valid JSON"),
        (("call", "nope"), "Error: KeyError: no command named 'nope'"),
        (("call", "add", '{"c": 1}'), "Error: "),
    ],
)
def test_bad_input_is_one_line_error(
    server: StateServer, args: tuple[str, ...], message: str
) -> None:
    code, out, err = cli(server.port, *args)
    assert code == 1
    assert err.startswith(message) and len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    "args",
    [
        ("get", "k"),
        ("set", "k", "1"),
        ("rm", "k"),
        ("commands",),
        ("watch",),
        ("lease", "k", "--seconds", "1"),
        ("call", "x"),
    ],
)
def test_server_down_is_one_line_error(args: tuple[str, ...]) -> None:
    code, _out, err = cli(free_port(), *args)
    assert code == 1
    assert err.startswith(
        "Error: ConnectionLostError: cannot connect to statehub at statehub://127.0.0.1:"
    )
    assert len(err.strip().splitlines()) == 1


def _statehub(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


#: The CLI, with Ctrl-C reaching it even when this run was started in the background of a
#: shell without job control (SIGINT ignored, inherited). Not with ``preexec_fn``: a fork
#: of a process with gRPC's threads is not safe.
_CLI = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from statehub.cli import main; main()"
)


def test_watch_prints_snapshot_then_changes(server: StateServer) -> None:
    with Client("127.0.0.1", server.port) as client:
        client.set("w.a", 1)
        client.set("other", 1)
        watch = _statehub(
            "watch", "w.", "--count", "2", "--port", str(server.port), "--host", "127.0.0.1"
        )
        try:
            assert watch.stdout is not None
            first = json.loads(watch.stdout.readline())
            assert first["snapshot"] is True and first["updates"] == {"w.a": 1}
            client.update({"w.b": [1]}, removals=["w.a"])
            out, _err = watch.communicate(timeout=30)
        finally:
            watch.kill()
    second = json.loads(out)
    assert second["updates"] == {"w.b": [1]} and second["removals"] == ["w.a"]
    assert not second["snapshot"] and watch.returncode == 0


@pytest.mark.parametrize("command", ["lease", "lock"])  # lock: its deprecated name
def test_lease_holds_the_lease_until_ctrl_c(server: StateServer, command: str) -> None:
    with Client("127.0.0.1", server.port) as client:
        lock = _statehub(
            command, "held", "--seconds", "60", "--port", str(server.port), "--host", "127.0.0.1"
        )
        try:
            assert lock.stderr is not None
            if command == "lock":
                deprecation = lock.stderr.readline()
                assert "'lock' is deprecated" in deprecation
                assert "use 'statehub lease'" in deprecation
            leased = lock.stderr.readline()  # the CLI says so once the lease is held
            assert "leased 'held' for 60 s" in leased
            assert not client.attempt_update_state(DictionaryChange({"held": 1}))
            lock.send_signal(signal.SIGINT)
            _out, err = lock.communicate(timeout=30)
        finally:
            lock.kill()
        assert lock.returncode == 0, err
        assert "released 'held'" in err
        assert client.attempt_update_state(DictionaryChange({"held": 2}))


def test_watch_reconnects_after_a_server_restart() -> None:
    first = threaded_server()
    port = first.port
    second: StateServer | None = None
    watch = _statehub("watch", "--count", "2", "--port", str(port), "--host", "127.0.0.1")
    try:
        assert watch.stdout is not None
        assert json.loads(watch.stdout.readline())["snapshot"] is True
        first.close()
        second = StateServer(address="127.0.0.1", port=port, grpc_port=0)
        second.state.update_state(None, DictionaryChange({"after": 1}))
        second.start_in_thread()
        out, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
        if second is not None:
            second.close()
    assert watch.returncode == 0, err
    last = json.loads(out.splitlines()[-1])
    assert last["updates"] == {"after": 1}
    assert err.splitlines() == [
        "connection lost (the server ended the session); reconnecting",
        "reconnected",
    ]
