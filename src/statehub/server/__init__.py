"""The server layer: sessions, transports, NanoVer-compatible services, StateServer."""

from statehub.server.session import Hub, Session
from statehub.server.state_server import (
    DEFAULT_ADDRESS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    StateServer,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_PORT",
    "Hub",
    "Session",
    "StateServer",
]
