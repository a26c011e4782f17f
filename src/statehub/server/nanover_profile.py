"""NanoVer's standard server behaviours, for a statehub server that stands in for one.

NanoVer's own server (``nanover-server``, its ``NanoverImdApplication``) does three things
beyond the protocol that its clients and tests rely on; ``statehub serve --nanover``
(``StateServer(nanover=True)``) does them too:

- ``imd.velocity_reset_available`` is ``False`` from the start (written if absent, so a
  durable state keeps what a simulation runner set);
- ``scene`` (the old pose: position xyz, rotation xyzw, scale xyz) and
  ``transform.simulation`` (``{transform: <the same 10 numbers with the x scale negated>,
  parent: "root"}``) are kept in step: a write of one writes the other (``scene`` wins
  when a change has both), whoever writes it, on any protocol;
- the command ``multiuser/radially-orient-origins(radius=1)`` puts one
  ``user-origin.<id>`` per ``avatar.<id>`` on a circle of that radius, facing its centre.

They are off by default: a statehub server that is not a NanoVer room has no
``imd.*`` key and no ``scene`` rule. The mirror follows the changes committed by this
server (``StateDictionary.content_updated``); with several servers on Redis, run
``--nanover`` on each.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from statehub.core.change import DictionaryChange
from statehub.core.commands import CommandRegistry
from statehub.store.answers import Answer
from statehub.store.state_dictionary import StateDictionary

logger = logging.getLogger(__name__)

VELOCITY_RESET_KEY = "imd.velocity_reset_available"
SCENE_KEY = "scene"
TRANSFORM_KEY = "transform.simulation"
RADIAL_ORIENT_COMMAND = "multiuser/radially-orient-origins"
AVATAR_PREFIX = "avatar."
ORIGIN_PREFIX = "user-origin."
#: The mirror's own writes: never mirrored again.
_MIRROR_TOKEN = "statehub-nanover-scene-mirror"


class NanoverProfile:
    """Installs NanoVer's standard behaviours on a server's state and commands."""

    def __init__(self, state: StateDictionary, commands: CommandRegistry) -> None:
        self.state = state
        self.commands = commands

    def install(self) -> NanoverProfile:
        """Mirror ``scene`` from now on, and serve the command."""
        self.state.content_updated.add_callback(self._mirror)
        self.commands.register(RADIAL_ORIENT_COMMAND, self.radially_orient_origins)
        return self

    async def start(self) -> None:
        """Write ``imd.velocity_reset_available`` unless the state has it (the server's
        start, in its event loop: a shared store commits there)."""
        _, content = self.state.shared_values()
        if VELOCITY_RESET_KEY not in content:
            change = DictionaryChange({VELOCITY_RESET_KEY: False})
            await self.state.update_state_async(None, change)

    def _mirror(self, *, access_token: object, change: DictionaryChange) -> None:
        if access_token == _MIRROR_TOKEN:
            return
        updates = change.updates
        if SCENE_KEY in updates:
            flipped = _x_scale_flipped(updates[SCENE_KEY])
            mirrored: dict[str, Any] | None = (
                None
                if flipped is None
                else {TRANSFORM_KEY: {"transform": flipped, "parent": "root"}}
            )
            source = SCENE_KEY
        elif TRANSFORM_KEY in updates:
            value = updates[TRANSFORM_KEY]
            flipped = _x_scale_flipped(value.get("transform") if type(value) is dict else None)
            mirrored = None if flipped is None else {SCENE_KEY: flipped}
            source = TRANSFORM_KEY
        else:
            return
        if mirrored is None:
            logger.info("NanoVer profile: %r is not a list of 10 numbers; not mirrored", source)
            return
        # Submitted, never waited for: this may run in the event loop, where a shared store
        # commits by round trip (an in-process store answers at once, in any thread).
        mirroring = self.state.submit_update(_MIRROR_TOKEN, DictionaryChange(mirrored))
        mirroring.add_done_callback(_log_failure)

    def radially_orient_origins(self, radius: float = 1) -> None:
        """One ``user-origin.<id>`` per avatar, spread on a circle of ``radius`` around
        the origin, each facing inwards (NanoVer's ``multiuser`` command)."""
        if type(radius) not in (int, float):
            raise TypeError(f"radius must be a number, got {type(radius).__name__}")
        _, content = self.state.shared_values()
        ids = [key[len(AVATAR_PREFIX) :] for key in content if key.startswith(AVATAR_PREFIX)]
        if not ids:
            return
        step = 2 * math.pi / len(ids)
        updates: dict[str, Any] = {}
        for index, user in enumerate(ids):
            angle = index * step
            turn = -angle - math.pi / 2  # about y, so that the origin faces the centre
            updates[ORIGIN_PREFIX + user] = {
                "position": [radius * math.cos(angle), 0, radius * math.sin(angle)],
                "rotation": [0, math.sin(turn / 2), 0, math.cos(turn / 2)],
            }
        self.state.update_state(None, DictionaryChange(updates))


def _log_failure(done: Answer[int]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.info("NanoVer profile: scene not mirrored: %s", done.exception())


def _x_scale_flipped(value: object) -> list[Any] | None:
    """The 10-number pose with its x scale (third from last) negated; None if it is not one."""
    if type(value) is not list or len(value) != 10:
        return None
    if not all(type(item) in (int, float) for item in value):
        return None
    flipped = list(value)
    flipped[-3] = -flipped[-3]
    return flipped
