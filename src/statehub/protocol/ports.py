"""The port layout a server listens on and a client looks for, agreed in one place.

Three consecutive ports from a base (``statehub serve --port BASE``):

- BASE (38801): the web edge. NanoVer's current clients connect to ``ws://host:38801``
  with their defaults, so the port they know answers them; the dashboard, the session
  protocol over WebSocket and the health and metrics pages share it.
- BASE + 1 (38802): the session protocol over plain TCP, the fastest transport and the
  one ``statehub://host`` and a client given no address use.
- BASE + 2 (38803): gRPC: the session protocol under ``statehub+grpc://``, NanoVer's
  gRPC-era services and Momotor's ``sharedLock``.
"""

from __future__ import annotations

DEFAULT_HTTP_PORT = 38801
DEFAULT_TCP_PORT = DEFAULT_HTTP_PORT + 1
DEFAULT_GRPC_PORT = DEFAULT_HTTP_PORT + 2

#: Where each transport sits relative to the base port.
TCP_OFFSET = DEFAULT_TCP_PORT - DEFAULT_HTTP_PORT
GRPC_OFFSET = DEFAULT_GRPC_PORT - DEFAULT_HTTP_PORT

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_TCP_PORT",
    "GRPC_OFFSET",
    "TCP_OFFSET",
]
