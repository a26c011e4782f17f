"""statehub as a drop-in for NanoVer: one process with both, NanoverServer, ESSD discovery."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from statehub.bench.fleet import read_served_ports
from statehub.nanover import NanoverServer
from support import nanover_modules
from support.raw_session import hello_roundtrip

DEADLINE = 20.0
STATEHUB_FIRST = "import statehub\nimport nanover.protocol.state, nanover.protocol.command\n"
NANOVER_FIRST = "import nanover.protocol.state, nanover.protocol.command\nimport statehub\n"
# A NanoVer client (its generated stubs) against a statehub server in the same process.
ROUNDTRIP = """
from statehub import StateServer
from nanover.protocol.state import StateStub, UpdateStateRequest, StateUpdate
from nanover.protocol.state import SubscribeStateUpdatesRequest
from google.protobuf import struct_pb2
import grpc

with StateServer(address="127.0.0.1", port=0) as server:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = StateStub(channel)
        change = struct_pb2.Struct()
        change.update({"answer": 42})
        reply = stub.UpdateState(
            UpdateStateRequest(access_token="me", update=StateUpdate(changed_keys=change))
        )
        stream = stub.SubscribeStateUpdates(SubscribeStateUpdatesRequest(update_interval=0))
        first = next(stream)
        stream.cancel()
print(reply.success, dict(first.changed_keys), server.copy_state())
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(nanover_modules.ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path},
    )


@pytest.mark.parametrize("imports", [STATEHUB_FIRST, NANOVER_FIRST], ids=["statehub", "nanover"])
def test_statehub_and_nanover_modules_load_in_one_process_in_either_order(imports: str) -> None:
    result = _python(imports + ROUNDTRIP)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True {'answer': 42.0} {'answer': 42.0}"


def test_importing_statehub_loads_no_protobuf_code() -> None:
    result = _python(
        "import sys, statehub\n"
        "print(sorted(name for name in sys.modules if name.startswith('google.protobuf')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture
def nanover_server() -> Iterator[NanoverServer]:
    server = NanoverServer(address="127.0.0.1", port=0)
    try:
        yield server
    finally:
        server.close()


def test_nanover_server_serves_from_its_constructor(nanover_server: NanoverServer) -> None:
    address, port = nanover_server.address_and_port
    # NanoVer's port is its gRPC port; statehub's own sessions also have a TCP port.
    assert (address, port) == ("127.0.0.1", nanover_server.grpc_port) and port > 0
    assert port == nanover_server.port != nanover_server.tcp_port
    assert hello_roundtrip(nanover_server.tcp_port)["ok"]
    assert nanover_server.server is nanover_server.grpc_server
    assert nanover_server.state_dictionary is nanover_server.state
    assert nanover_server.logger.name == "statehub.nanover"


def test_nanover_server_on_a_port_in_use_raises_oserror(nanover_server: NanoverServer) -> None:
    with pytest.raises(OSError, match=str(nanover_server.port)):
        NanoverServer(address="127.0.0.1", port=nanover_server.port)


def test_nanover_server_commands_have_nanovers_fields(nanover_server: NanoverServer) -> None:
    def add(a: float, b: float) -> dict[str, Any]:
        return {"sum": a + b}

    nanover_server.register_command("add", add, {"a": 1, "b": 2})
    registration = nanover_server.commands["add"]
    assert (registration.name, registration.arguments, registration.handler) == (
        "add",
        {"a": 1, "b": 2},
        add,
    )
    assert (registration.info.name, registration.info.arguments) == ("add", {"a": 1, "b": 2})
    assert nanover_server.run_command("add", {"b": 5}) == {"sum": 6}
    with pytest.raises(KeyError, match="missing"):
        nanover_server.run_command("missing")


class EchoService:
    """A NanoVer-style servicer: plain (threaded) methods and its ``add_to_server_method``."""

    def __init__(self) -> None:
        self.add_to_server_method = add_echo_to_server

    def Echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return request[::-1]


def add_echo_to_server(service: EchoService, server: Any) -> None:
    handler = grpc.unary_unary_rpc_method_handler(service.Echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),)
    )


class ServerWithEcho(NanoverServer):
    """NanoVer server-side code: a subclass adding its own service in setup_services."""

    def setup_services(self) -> None:
        super().setup_services()
        self.add_service(EchoService())


def test_nanover_subclasses_add_their_own_threaded_services() -> None:
    server = ServerWithEcho(address="127.0.0.1", port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            echo = channel.unary_unary("/test.Echo/Echo")
            assert echo(b"abc", timeout=DEADLINE) == b"cba"
        with pytest.raises(AttributeError, match="add_to_server_method"):
            server.add_service(object())  # type: ignore[arg-type]
    finally:
        server.close()


def test_serve_discoverable_announces_itself_by_essd_on_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(DEADLINE)
        discovery_port = listener.getsockname()[1]
        process = subprocess.Popen(
            [
                *[sys.executable, "-c", "from statehub.cli import main; main()", "serve"],
                *["--port", "0", "--discoverable", "--name", "lab hub"],
                *["--discovery-address", "127.0.0.1", "--discovery-port", str(discovery_port)],
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            ports = read_served_ports(process)
            message, _ = listener.recvfrom(2048)
            hub = json.loads(message)
            assert hub["name"] == "lab hub" and hub["essd_version"] == "1.0.0" and hub["id"]
            assert hub["address"] == "127.0.0.1"
            # NanoVer's current clients look for "ws": the web port, where its protocol is;
            # its gRPC-era clients for "multiplayer"; statehub's own for its TCP port.
            assert hub["services"] == {
                "ws": ports.http,
                "multiplayer": ports.grpc,
                "statehub": ports.tcp,
            }
            assert hello_roundtrip(hub["services"]["statehub"])["ok"]
        finally:
            process.terminate()
            assert process.wait(timeout=DEADLINE) == 0


def test_an_essd_message_over_the_size_limit_is_refused() -> None:
    from statehub.server.discovery import essd_message

    with pytest.raises(ValueError, match="1024-byte"):
        essd_message("x" * 1100, "127.0.0.1", {"statehub": 1}, "id")
