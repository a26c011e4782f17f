"""Helpers for the client tests: free ports, URLs per transport, servers in threads."""

from __future__ import annotations

import socket
from typing import Any

from statehub.serving.state_server import StateServer


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: The schemes the shared client fixtures run on (``client_scheme`` in conftest.py): the
#: default, plain TCP, and gRPC, which stays a supported transport.
CLIENT_SCHEMES = ("statehub", "statehub+grpc")


def client_url(server: StateServer, scheme: str = "statehub") -> str:
    """The URL reaching ``server`` on loopback over ``scheme``'s transport."""
    port = server.grpc_port if scheme == "statehub+grpc" else server.tcp_port
    return f"{scheme}://127.0.0.1:{port}"


def server_for(scheme: str, port: int, **options: Any) -> StateServer:
    """A server listening for ``scheme`` on ``port`` (its other ports free ones): a server
    restarted where a client of that scheme will look for it."""
    if scheme == "statehub+grpc":
        return StateServer(address="127.0.0.1", port=0, grpc_port=port, **options)
    return StateServer(address="127.0.0.1", port=port, grpc_port=0, **options)


def threaded_server(port: int = 0, grpc_port: int = 0) -> StateServer:
    """A StateServer on 127.0.0.1 (plain TCP on ``port``, gRPC on ``grpc_port``; 0: free
    ones) running in a background thread (for blocking tests)."""
    return StateServer(address="127.0.0.1", port=port, grpc_port=grpc_port).start_in_thread()
