"""Finding the server: statehub:// URLs, STATEHUB_URL/HOST/PORT, the CLI's -h/-p."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from statehub import AsyncClient, Client
from statehub.cli import main
from statehub.client.address import Target, parse_target, resolve_target
from statehub.serving.state_server import StateServer
from support.client_servers import threaded_server

ENVIRONMENT = ("STATEHUB_URL", "STATEHUB_HOST", "STATEHUB_PORT")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[StateServer]:
    running = threaded_server()
    try:
        yield running
    finally:
        running.close()


@pytest.mark.parametrize(
    ("address", "port", "target"),
    [
        ("localhost", None, Target("statehub", "localhost", 38802)),
        ("10.0.0.5", 4000, Target("statehub", "10.0.0.5", 4000)),
        ("statehub://hub.lab:4000", None, Target("statehub", "hub.lab", 4000)),
        ("statehub://hub.lab:4000", 4000, Target("statehub", "hub.lab", 4000)),
        ("statehub://hub.lab", 5, Target("statehub", "hub.lab", 5)),
        ("STATEHUB://hub.lab/", None, Target("statehub", "hub.lab", 38802)),
        ("::1", None, Target("statehub", "::1", 38802)),
        ("[::1]", 7, Target("statehub", "::1", 7)),
        ("statehub://[::1]:9", None, Target("statehub", "::1", 9)),
    ],
)
def test_addresses_parse_to_targets(address: str, port: int | None, target: Target) -> None:
    assert parse_target(address, port) == target


@pytest.mark.parametrize(
    ("address", "target", "transport", "dialled"),
    [
        ("hub.lab", Target("statehub", "hub.lab", 38802), "tcp", "statehub://hub.lab:38802"),
        (
            "statehubs://hub.lab",
            Target("statehubs", "hub.lab", 38802),
            "tcp",
            "statehubs://hub.lab:38802",
        ),
        (
            "statehub+tcp://hub.lab",
            Target("statehub+tcp", "hub.lab", 38802),
            "tcp",
            "statehub+tcp://hub.lab:38802",
        ),
        ("statehub+grpc://hub.lab", Target("statehub+grpc", "hub.lab", 38803), "grpc", "hub.lab"),
        ("statehubs+grpc://[::1]", Target("statehubs+grpc", "::1", 38803), "grpc", "[::1]"),
        ("ws://hub.lab", Target("ws", "hub.lab", 38801), "websocket", "ws://hub.lab:38801"),
    ],
)
def test_each_scheme_has_its_port_and_transport(
    address: str, target: Target, transport: str, dialled: str
) -> None:
    """The layout of ``statehub serve``: web 38801, plain TCP 38802 (``statehub://``, the
    default), gRPC 38803 only when asked for."""
    parsed = parse_target(address)
    assert (parsed, parsed.transport) == (target, transport)
    assert parsed.tls == target.scheme.startswith("statehubs")
    assert parsed.dial_address == dialled


@pytest.mark.parametrize(
    ("address", "port", "text"),
    [
        ("hub.lab:4000", None, "looks like host:port"),
        ("ftp://hub.lab", None, "unknown scheme ftp://"),
        ("statehub://hub.lab:70000", None, "0 to 65535"),
        ("statehub://:4000", None, "names no host"),
        ("statehub://hub.lab/extra", None, "nothing more"),
        ("statehub://hub.lab:1", 2, "says port 1, but port 2"),
        ("", None, "must be a host"),
        ("hub.lab", 70000, "port must be an int"),
    ],
)
def test_bad_addresses_name_what_is_wrong(address: str, port: int | None, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        parse_target(address, port)


def test_the_environment_is_read_when_no_address_is_given() -> None:
    assert resolve_target(environ={}) == Target("statehub", "localhost", 38802)
    url = {"STATEHUB_URL": "statehub://a:1", "STATEHUB_HOST": "b", "STATEHUB_PORT": "2"}
    assert resolve_target(environ=url) == Target("statehub", "a", 1)
    assert resolve_target(port=3, environ=url) == Target("statehub", "a", 3)
    assert resolve_target("c", environ=url) == Target("statehub", "c", 38802)
    split = {"STATEHUB_HOST": "b", "STATEHUB_PORT": "2"}
    assert resolve_target(environ=split) == Target("statehub", "b", 2)
    with pytest.raises(ValueError, match="STATEHUB_PORT must be a port number"):
        resolve_target(environ={"STATEHUB_PORT": "eighty"})
    with pytest.raises(ValueError, match="STATEHUB_URL 'http://a'"):
        resolve_target(environ={"STATEHUB_URL": "http://a"})


def test_client_with_no_arguments_uses_statehub_url(
    server: StateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATEHUB_URL", f"statehub://127.0.0.1:{server.port}")
    with Client() as client:
        assert client.port == server.port
        client.set("address.url", 1)
    assert server.state.get("address.url") == 1


async def test_async_client_with_no_arguments_uses_host_and_port_variables(
    server: StateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATEHUB_HOST", "127.0.0.1")
    monkeypatch.setenv("STATEHUB_PORT", str(server.port))
    async with AsyncClient() as client:
        await client.set("address.split", 2)
    assert server.state.get("address.split") == 2


def test_client_with_nothing_given_reaches_the_default_port_over_tcp() -> None:
    """``Client()`` with no address and no environment: localhost:38802, plain TCP."""
    try:
        server = StateServer(address="127.0.0.1").start_in_thread()
    except OSError:
        pytest.skip("the default ports are taken on this machine")
    try:
        with Client() as client:
            client.set("address.default", 6)
            assert client.port == 38802
            assert {session.peer.transport for session in server.hub.sessions} == {"tcp"}
        assert server.state.get("address.default") == 6
    finally:
        server.close()


def test_client_takes_a_url_as_its_address(server: StateServer) -> None:
    with Client(f"statehub://127.0.0.1:{server.port}") as client:
        client.set("address.given", 3)
    assert server.state.get("address.given") == 3


def test_cli_reads_statehub_url(server: StateServer) -> None:
    environment = {"STATEHUB_URL": f"statehub://127.0.0.1:{server.port}"}
    result = CliRunner().invoke(main, ["set", "address.cli", "4"], env=environment)
    assert result.exit_code == 0, result.output
    assert server.state.get("address.cli") == 4


def test_cli_short_options_and_url_host(server: StateServer) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["set", "address.short", "5", "-h", "127.0.0.1", "-p", str(server.port)]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        main, ["get", "address.short", "-h", f"statehub://127.0.0.1:{server.port}"]
    )
    assert (result.exit_code, result.stdout.strip()) == (0, "5")


@pytest.mark.parametrize("command", [["get", "k"], ["serve"]])
def test_cli_rejects_host_with_a_port(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--host", "127.0.0.1:38801"])
    assert result.exit_code == 2
    assert "'127.0.0.1:38801' looks like host:port" in result.stderr
    assert "--port" in result.stderr or "port separately" in result.stderr
