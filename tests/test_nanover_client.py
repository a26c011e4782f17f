"""NanoVer's real client (``nanover-server`` from PyPI, Python 3.13) against ``statehub
serve``: what a lab runs today (issue 20). See tests/support/nanover_client.py for how the
client is installed and run; the rates asserted are loose, as the machine is shared."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.nanover_client import (
    Statehub,
    background,
    nanover_python,
    remote_runner,
    run_client,
    simulation_xml,
    statehub_serve,
    stop,
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
    eventually_sync(lambda: client.get_shared_value("found.by") == "discovery")
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


ROOM = """
from nanover.websocket.client.app_client import NanoverImdClient

POSE = [0.5, 1.0, -2.0, 0.0, 0.0, 0.0, 1.0, 1.5, 1.5, 1.5]
url = ARGS["url"]
seen = {}
b = NanoverImdClient.from_url(url)
a = NanoverImdClient.from_url(url)
try:
    a.set_shared_value("avatar.u-A", {"playerid": "u-A", "name": "Ana", "components": []})
    b.set_shared_value("avatar.u-B", {"playerid": "u-B", "name": "Ben", "components": []})
    eventually_sync(lambda: b.get_shared_value("avatar.u-A") is not None, what="A's avatar at B")
    eventually_sync(lambda: a.get_shared_value("avatar.u-B") is not None, what="B's avatar at A")
    seen["avatar_at_b"] = b.get_shared_value("avatar.u-A")
    latencies = []
    for index in range(20):
        start = time.monotonic()
        a.set_shared_value("update.index.u-A", index)
        eventually_sync(lambda: b.get_shared_value("update.index.u-A") == index,
                        what="update index")
        latencies.append(time.monotonic() - start)
    seen["latency_p50_ms"] = sorted(latencies)[len(latencies) // 2] * 1000
    seen["velocity_reset"] = b.get_shared_value("imd.velocity_reset_available")
    seen["orient"] = b.run_command_blocking("multiuser/radially-orient-origins", radius=1.5)
    eventually_sync(lambda: a.get_shared_value("user-origin.u-A") is not None, what="origin of A")
    eventually_sync(lambda: a.get_shared_value("user-origin.u-B") is not None, what="origin of B")
    seen["origin_a"] = a.get_shared_value("user-origin.u-A")
    a.set_shared_value("scene", POSE)
    eventually_sync(lambda: b.get_shared_value("transform.simulation") is not None, what="mirror")
    seen["transform"] = b.get_shared_value("transform.simulation")
    a.register_command(
        "demo/greet", lambda who="world": {"text": f"hi {who}"}, default_arguments={"who": "x"}
    )
    eventually_sync(lambda: "demo/greet" in b.run_command_blocking("commands/list")["list"],
             what="registration")
    listing = b.run_command_blocking("commands/list")
    seen["listed"] = sorted(listing["list"])
    seen["entries"] = sorted(entry["name"] for entry in listing["commands"])
    seen["greet"] = b.run_command_blocking("demo/greet", who="B")
    seen["greet_default"] = b.run_command_blocking("demo/greet")
    try:
        b.run_command_blocking("no/such")
    except RuntimeError as error:
        seen["unknown"] = str(error)
finally:
    a.close()
eventually_sync(lambda: b.get_shared_value("avatar.u-A") is None, what="A's avatar removed")
eventually_sync(lambda: b.get_shared_value("user-origin.u-A") is None, what="A's origin removed")
seen["left"] = sorted(key for key in b.copy_state() if "u-A" in key)
seen["kept"] = sorted(key for key in b.copy_state() if "u-B" in key)
c = NanoverImdClient.from_url(url)
with c:
    c.set_shared_value("avatar.c.d", {"name": "dotted"})
    c.set_shared_value("selection.c.d.1", {"ids": [1]})
    eventually_sync(lambda: b.get_shared_value("selection.c.d.1") is not None, what="C's keys")
eventually_sync(lambda: b.get_shared_value("avatar.c.d") is None, what="dotted avatar removed")
seen["dotted_left"] = sorted(key for key in b.copy_state() if ".c.d" in key)
b.close()
report(seen)
"""


def test_a_room_avatars_commands_registered_commands_and_cleanup() -> None:
    with statehub_serve("--nanover") as server:
        seen = run_client(ROOM, {"url": server.ws_url})
    assert seen["avatar_at_b"] == {"playerid": "u-A", "name": "Ana", "components": []}
    assert seen["velocity_reset"] is False
    assert seen["orient"] is None
    assert len(seen["origin_a"]["position"]) == 3 and len(seen["origin_a"]["rotation"]) == 4
    assert seen["transform"] == {
        "transform": [0.5, 1.0, -2.0, 0.0, 0.0, 0.0, 1.0, -1.5, 1.5, 1.5],
        "parent": "root",
    }
    for names in (seen["listed"], seen["entries"]):
        assert {"commands/list", "demo/greet", "multiuser/radially-orient-origins"} <= set(names)
    assert seen["greet"] == {"text": "hi B"}
    assert seen["greet_default"] == {"text": "hi x"}
    assert "no/such" in seen["unknown"]
    assert seen["left"] == []  # every key of A's went when it left
    assert "avatar.u-B" in seen["kept"]
    assert seen["dotted_left"] == []


#: Reads every entry in order: skipping entries seeks forward in the zip member, which
#: Python 3.13.0's zipfile gets wrong for stored members (EOFError).
RECORDED = """
from nanover.recording.reading import NanoverRecordingReader
state, frames, with_positions = {}, 0, 0
with NanoverRecordingReader.from_path(ARGS["path"]) as reader:
    for entry in reader.index:
        message = reader.get_message_from_entry(entry)
        if "frame" in message:
            frames += 1
            with_positions += "particle.positions" in message["frame"]
        if "state" in message:
            state.update(message["state"]["updates"])
            for key in message["state"]["removals"]:
                state.pop(key, None)
report({"frames": frames, "with_positions": with_positions, "last_state": state})
"""


def _record(simulation: Path, directory: Path) -> Path:
    """Record 2 s of a room with a --remote runner by ``nanover-record``; the file."""
    record = str(nanover_python().parent / "nanover-record")
    with statehub_serve() as hub, remote_runner(hub.ws_url, simulation):
        run_client(FRAME_COUNTER, {"url": hub.ws_url, "seconds": 0.1})  # frames are flowing
        with background(
            [record, "--address", hub.ws_url, "--path", str(directory), "--prefix", "lab"],
            stdin=subprocess.DEVNULL,
        ) as recorder:
            run_client(
                """
from nanover.websocket.client.app_client import NanoverImdClient
with NanoverImdClient.from_url(ARGS["url"]) as client:
    client.set_shared_value("note.recorded", {"by": "test"})
    eventually_sync(lambda: client.get_shared_value("note.recorded") is not None)
    time.sleep(2)
report(True)
""",
                {"url": hub.ws_url},
            )
            assert recorder.poll() is None
            # The server going away ends a recording cleanly ("ended by disconnection");
            # Ctrl-C races the recorder's writer thread in NanoVer 0.1.3018.
            stop(hub.process)
            out, _ = recorder.communicate(timeout=30)
            assert "Recording ended by disconnection" in out
    recordings = list(directory.glob("lab-1-*.nanover.zip"))
    assert len(recordings) == 1, list(directory.iterdir())
    return recordings[0]


def test_nanover_record_records_state_and_frames(simulation: Path, tmp_path: Path) -> None:
    seen = run_client(RECORDED, {"path": str(_record(simulation, tmp_path))})
    assert seen["frames"] >= 20 and seen["with_positions"] >= 20, seen
    assert seen["last_state"]["note.recorded"] == {"by": "test"}


PLAYBACK = """
from nanover.websocket.client.app_client import NanoverImdClient

def positions(client):
    return [[float(x) for x in p] for p in client.current_frame.particle_positions[:5]]

seen = {}
with NanoverImdClient.from_url(ARGS["url"]) as client:
    client.wait_until_minimum_usable_frame(timeout=60)
    eventually_sync(lambda: "playback/list" in client.run_command_blocking("commands/list")["list"],
             what="the runner's commands")
    seen["list"] = client.run_list()
    seen["particles"] = client.current_frame.particle_count
    client.run_pause()
    time.sleep(0.3)
    still = positions(client)
    time.sleep(0.5)
    seen["paused_still"] = positions(client) == still
    # Answered by the runner through statehub; whether the frame moves depends on where
    # the 2 s recording is (at its end a step shows nothing), so only the answer is checked.
    client.run_step()
    client.run_play()
    moving = positions(client)
    eventually_sync(lambda: positions(client) != moving, what="playing again")
    counter = client.current_frame.simulation_counter
    client.set_shared_value("selection.u-A.1", {"selected": {"particle_ids": [1, 2]}})
    eventually_sync(lambda: client.get_shared_value("selection.u-A.1") is not None)
    client.run_load(1)
    eventually_sync(lambda: client.current_frame.simulation_counter != counter,
                    what="a new sequence")
    eventually_sync(lambda: client.get_shared_value("selection.u-A.1") is None,
                    what="state cleared")
    # the runner writes the index it loaded after it clears the state
    eventually_sync(lambda: client.get_shared_value("simulation.index") == 1,
                    what="simulation.index of the recording loaded")
    seen["loaded"] = client.get_shared_value("simulation.index")
    seen["name"] = client.get_shared_value("simulation.name")
    client.run_reset()
    client.run_next()
    eventually_sync(lambda: client.get_shared_value("simulation.index") == 0, what="next")
report(seen)
"""


def test_playback_commands_drive_a_remote_runner_playing_a_recording(
    simulation: Path, tmp_path: Path
) -> None:
    recording = _record(simulation, tmp_path)
    with (
        statehub_serve() as hub,
        remote_runner(hub.ws_url, simulation, playback=recording),
    ):
        seen = run_client(PLAYBACK, {"url": hub.ws_url})
    assert len(seen["list"]) == 2  # the OpenMM simulation and the recording
    assert seen["particles"] == 60
    assert seen["paused_still"]
    assert seen["loaded"] == 1


#: Bytes and a 250,000-particle selection between two real clients; a value over
#: statehub's limit is refused and its writer's copy converges (not silent divergence).
VALUES = """
from nanover.websocket.client.app_client import NanoverImdClient

url = ARGS["url"]
a = NanoverImdClient.from_url(url)
b = NanoverImdClient.from_url(url)
seen = {}
try:
    packed = bytes(range(256)) * 4
    selection = {"name": "big", "selected": {"particle_ids": list(range(250_000))}}
    a.set_shared_value("packed.colours", packed)
    a.set_shared_value("selection.big", selection)
    eventually_sync(lambda: b.get_shared_value("selection.big") is not None,
                    what="the selection at B")
    eventually_sync(lambda: b.get_shared_value("packed.colours") is not None, what="the bytes at B")
    got = b.get_shared_value("packed.colours")
    seen["bytes_type"] = type(got).__name__
    seen["bytes_equal"] = got == packed
    seen["selected"] = len(b.get_shared_value("selection.big")["selected"]["particle_ids"])
    a.set_shared_value("too.big", b"x" * (ARGS["limit"] + 1))
    # Refused: A's own copy is told the key's current value (none) and converges.
    eventually_sync(lambda: a.get_shared_value("too.big") is None, what="A's copy converged")
    a.set_shared_value("after", 1)
    eventually_sync(lambda: b.get_shared_value("after") == 1, what="a later write at B")
    seen["too_big_at_b"] = b.get_shared_value("too.big")
finally:
    a.close()
    b.close()
report(seen)
"""


def test_bytes_and_a_250000_particle_selection_travel_and_an_oversized_value_fails() -> None:
    from statehub.core.limits import MAX_VALUE_BYTES

    with statehub_serve() as server:
        seen = run_client(VALUES, {"url": server.ws_url, "limit": MAX_VALUE_BYTES})
    assert seen == {
        "bytes_type": "bytes",
        "bytes_equal": True,
        "selected": 250_000,
        "too_big_at_b": None,
    }
