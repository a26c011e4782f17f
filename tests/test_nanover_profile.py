"""NanoVer's standard server behaviours (``StateServer(nanover=True)``, ``statehub serve
--nanover``): the velocity-reset key, the ``scene`` mirror, radially oriented origins."""

from __future__ import annotations

import math

from statehub import DictionaryChange
from statehub.server.nanover_profile import (
    RADIAL_ORIENT_COMMAND,
    SCENE_KEY,
    TRANSFORM_KEY,
    VELOCITY_RESET_KEY,
)
from support.polling import eventually
from support.raw_session import running_server
from test_web_nanover import nanover_peer

POSE = [0.5, 1.0, -2.0, 0.0, 0.0, 0.0, 1.0, 1.5, 1.5, 1.5]
FLIPPED = [0.5, 1.0, -2.0, 0.0, 0.0, 0.0, 1.0, -1.5, 1.5, 1.5]


async def test_off_by_default() -> None:
    async with running_server() as server:
        assert server.copy_state() == {}
        assert RADIAL_ORIENT_COMMAND not in server.commands
        server.update_state(None, DictionaryChange({SCENE_KEY: POSE}))
        assert server.copy_state() == {SCENE_KEY: POSE}


async def test_velocity_reset_is_written_at_start_unless_present() -> None:
    async with running_server(nanover=True) as server:
        assert server.copy_state() == {VELOCITY_RESET_KEY: False}
        server.update_state(None, DictionaryChange({VELOCITY_RESET_KEY: True}))
        assert RADIAL_ORIENT_COMMAND in server.commands


async def test_scene_and_the_simulation_transform_mirror_each_other() -> None:
    async with running_server(nanover=True, http_port=0) as server, nanover_peer(server) as peer:
        await peer.write({SCENE_KEY: POSE})
        await eventually(lambda: TRANSFORM_KEY in peer.state)
        assert peer.state[TRANSFORM_KEY] == {"transform": FLIPPED, "parent": "root"}
        moved = [*FLIPPED[:7], -2.0, 2.0, 2.0]
        server.update_state(None, DictionaryChange({TRANSFORM_KEY: {"transform": moved}}))
        assert server.copy_state()[SCENE_KEY] == [*FLIPPED[:7], 2.0, 2.0, 2.0]
        # A pose that is not 10 numbers is stored as written and not mirrored.
        server.update_state(None, DictionaryChange({SCENE_KEY: [1, 2]}))
        assert server.copy_state()[TRANSFORM_KEY]["transform"] == moved


async def test_radially_orient_origins_puts_each_avatar_on_a_circle() -> None:
    async with running_server(nanover=True) as server:
        server.update_state(None, DictionaryChange({"avatar.a": {}, "avatar.b.c": {}}))
        assert await server.hub.commands.run_async(RADIAL_ORIENT_COMMAND, {"radius": 2}) is None
        state = server.copy_state()
        origins = {key: value for key, value in state.items() if key.startswith("user-origin.")}
        assert set(origins) == {"user-origin.a", "user-origin.b.c"}
        for origin in origins.values():
            x, y, z = origin["position"]
            assert math.isclose(math.hypot(x, z), 2) and y == 0
            assert math.isclose(sum(q * q for q in origin["rotation"]), 1)
        assert origins["user-origin.a"]["position"] == [2, 0, 0]
