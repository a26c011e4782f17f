"""StateServer: the engine (``statehub.server``) served on its ports through every edge
(gRPC, plain TCP, the web port's WebSockets, dashboard and ``/metrics``).

It sits above the edges because it starts them; the engine below knows none of them.
"""

from statehub.serving.state_server import (
    DEFAULT_ADDRESS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    StateServer,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_PORT",
    "StateServer",
]
