"""NanoVer's real client (``nanover-server`` from PyPI, Python 3.13) against ``statehub
serve``: what a lab runs today (issue 20). See tests/nanover_client_support.py for how the
client is installed and run; the rates asserted are loose, as the machine is shared."""

from __future__ import annotations

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
