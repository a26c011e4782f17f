"""The server layer: the engine every edge shares (sessions, fan-out, limits) and the
session protocol's own transports. ``statehub.serving.StateServer`` puts it on its ports."""

from statehub.server.session import Hub, Session

__all__ = [
    "Hub",
    "Session",
]
