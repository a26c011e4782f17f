"""NanoVer's real client (``nanover-server`` from PyPI, Python 3.13) against ``statehub
serve``: what a lab runs today (issue 20). See tests/nanover_client_support.py for how the
client is installed and run; the rates asserted are loose, as the machine is shared."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanover_client_support import (
    Statehub,
    remote_runner,
    run_client,
    simulation_xml,
    statehub_serve,
)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def hub() -> Iterator[Statehub]:
    with statehub_serve() as server:
        yield server


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulation_xml(tmp_path_factory.mktemp("nanover") / "argon.xml", 60)


FRAME_COUNTER = """
from nanover.websocket.client.app_client import NanoverImdClient

class Counting(NanoverImdClient):
    counted = 0
    with_positions = 0
    def recv_frame(self, message):
        super().recv_frame(message)
        Counting.counted += 1
        if "particle.positions" in message:
            Counting.with_positions += 1

def _floats(positions):
    return [[float(x) for x in position] for position in positions[:3]]

with Counting.from_url(ARGS["url"]) as client:
    client.wait_until_minimum_usable_frame(timeout=60)
    first_positions = client.current_frame.particle_positions
    Counting.counted = Counting.with_positions = 0
    start = time.monotonic()
    time.sleep(ARGS["seconds"])
    elapsed = time.monotonic() - start
    frame = client.current_frame
    report({
        "frames_per_second": Counting.counted / elapsed,
        "positions_per_second": Counting.with_positions / elapsed,
        "particle_count": frame.particle_count,
        "positions": len(frame.particle_positions),
        "moved": _floats(first_positions) != _floats(frame.particle_positions),
        "bonds": len(frame.bond_pairs),
        "has_timestamp": "server.timestamp" in frame.frame_dict,
    })
"""


def test_a_remote_runner_frames_reach_a_second_client_at_30_hz(
    hub: Statehub, simulation: Path
) -> None:
    with remote_runner(hub.ws_url, simulation):
        seen = run_client(FRAME_COUNTER, {"url": hub.ws_url, "seconds": 3})
    assert seen["particle_count"] == 60
    assert seen["positions"] == 60
    assert seen["bonds"] > 0
    assert seen["moved"] and seen["has_timestamp"]
    assert seen["frames_per_second"] >= 20, seen
    assert seen["positions_per_second"] >= 20, seen


DISCOVERER = """
from nanover.websocket.client.app_client import (
    NanoverImdClient, _search_for_first_server_with_name,
)
hub = _search_for_first_server_with_name(
    ARGS["name"], search_time=20, discovery_address="127.0.0.1", discovery_port=ARGS["port"]
)
found = hub.get_service_address("ws") if hub else None
client = NanoverImdClient.from_discovery(server_name=ARGS["name"], discovery_port=ARGS["port"])
with client:
    client.set_shared_value("found.by", "discovery")
    wait_for(lambda: client.get_shared_value("found.by") == "discovery")
report({"ws": found, "services": hub.services if hub else None})
"""


def test_the_client_finds_statehub_by_discovery_on_loopback() -> None:
    port = _free_udp_port()
    with statehub_serve(
        *["--discoverable", "--name", "statehub lab test"],
        *["--discovery-address", "127.0.0.1", "--discovery-port", str(port)],
    ) as server:
        seen = run_client(DISCOVERER, {"name": "statehub lab test", "port": port})
    assert seen["ws"] == ["127.0.0.1", server.web_port]
    assert seen["services"]["multiplayer"] == server.grpc_port
