"""The room benchmark's plumbing: a ``statehub serve`` process, clients spread over worker
processes, every figure measured. Not a measurement: nothing here is timed."""

from __future__ import annotations

from typing import get_args

import msgpack
import pytest

from statehub.bench import room


@pytest.mark.parametrize("mode", get_args(room.Mode))
def test_every_client_of_every_worker_reports_what_it_received(mode: room.Mode) -> None:
    run = room.run_room(mode, clients=5, processes=2, seconds=0.5, warm_up=0.3)
    assert len(run.rates) == 5 and all(rate > 0 for rate in run.rates), run.rates
    assert 1 <= run.avatars_per_update <= 10  # 5 clients write 2 keys each
    assert len(run.client_cpu) == 2 and all(cpu >= 0 for cpu in run.client_cpu)
    assert run.server_cpu > 0 and run.server_waiting >= 0


def test_clients_are_shared_out_evenly_over_the_workers() -> None:
    assert room._shares(10, 4) == [(0, 3), (3, 3), (6, 2), (8, 2)]
    assert room._shares(2, 4) == [(0, 1), (1, 1)]


@pytest.mark.parametrize("keys", [0, 1, 15, 16, 65_535, 65_536])
def test_the_keys_of_a_state_message_are_counted_from_its_header(keys: int) -> None:
    updates = {f"avatar.u{n}": {"n": n} for n in range(keys)}
    message = msgpack.packb({"state": {"updates": updates, "removals": []}})
    assert message.startswith(room._STATE_HEADER)
    assert room.updated_keys(message) == keys


def test_other_messages_are_decoded_to_be_counted() -> None:
    reordered = msgpack.packb({"state": {"removals": ["a"], "updates": {"b": 1, "c": 2}}})
    assert room.updated_keys(reordered) == 2
    assert room.updated_keys(msgpack.packb({"command": {"request": {}}})) is None
    assert room.updated_keys(msgpack.packb([1, 2])) is None


def test_the_frames_bench_measures_every_client_and_the_server() -> None:
    from statehub.bench import frames

    results = frames.run(clients=(3,), seconds=0.5)
    figures = {result.workload.split(" (")[0]: result.figure for result in results}
    assert figures["frames: received per client, median"] > 0
    assert figures["frames: received per client, slowest"] > 0
    assert figures["state updates: per client, median"] > 0
    assert figures["state updates: per client, slowest"] > 0
    assert figures["frames: server CPU"] > 0
    assert figures["frames: server CPU per client"] > 0
    assert figures["frames: server waiting for a CPU"] >= 0
    assert figures["frames: clients' CPU, 2 processes"] > 0
    assert figures["frames: server CPU per frame delivered"] > 0
    assert figures["frames: clients' CPU per frame received"] > 0


def test_the_relay_packs_frames_as_the_frames_bench_expects() -> None:
    from statehub.bench import frames
    from statehub.web.nanover_frames import _pack_frame

    assert _pack_frame({"frame.index": 0}).startswith(frames._FRAME_HEADER)


def test_a_frame_counts_only_with_all_its_particle_positions() -> None:
    import struct

    from statehub.bench import frames
    from statehub.web.nanover_frames import _pack_frame

    positions = struct.pack(f"<{3 * frames.ATOMS}f", *([0.5] * (3 * frames.ATOMS)))
    whole = _pack_frame({"frame.index": 3, "particle.positions": positions})
    assert frames.carries_positions(whole)
    assert not frames.carries_positions(whole[:-1])  # cut short
    assert not frames.carries_positions(_pack_frame({"frame.index": 3}))  # none
    fewer = _pack_frame({"frame.index": 3, "particle.positions": positions[:-12]})
    assert not frames.carries_positions(fewer)  # an atom short
