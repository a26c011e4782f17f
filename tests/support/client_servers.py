"""Helpers for the client tests: free ports, servers in threads."""

from __future__ import annotations

import socket

from statehub.serving.state_server import StateServer


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def threaded_server(port: int = 0, grpc_port: int = 0) -> StateServer:
    """A StateServer on 127.0.0.1 (plain TCP on ``port``, gRPC on ``grpc_port``; 0: free
    ones) running in a background thread (for blocking tests)."""
    return StateServer(address="127.0.0.1", port=port, grpc_port=grpc_port).start_in_thread()
