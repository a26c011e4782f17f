"""The transports of the session protocol, as the tests reach them: one ``Transport`` each
(plain TCP, gRPC, WebSocket), so "run this test on each transport" is one fixture
(``transport`` in tests/conftest.py) rather than a list of schemes in every module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from statehub import StateServer


@dataclass(frozen=True)
class Transport:
    """``name`` as a session's peer reports it, the client URL's ``scheme``, the server's
    ``option`` that sets its port and the ``attribute`` that tells the port bound."""

    name: str
    scheme: str
    option: str
    attribute: str

    def url(self, server: StateServer) -> str:
        """The URL reaching ``server`` on loopback over this transport."""
        return f"{self.scheme}://127.0.0.1:{getattr(server, self.attribute)}"

    def server(self, port: int, **options: Any) -> StateServer:
        """A server listening for this transport on ``port`` (its other ports free ones):
        a server restarted where a client of this transport will look for it."""
        ports = {"port": 0, "grpc_port": 0, self.option: port}
        return StateServer(address="127.0.0.1", **ports, **options)


TCP = Transport("tcp", "statehub", "port", "tcp_port")
GRPC = Transport("grpc", "statehub+grpc", "grpc_port", "grpc_port")
WEBSOCKET = Transport("websocket", "ws", "http_port", "http_port")

#: What the client tests run on (``transport`` in tests/conftest.py): the default, plain
#: TCP, and gRPC, which stays a supported transport.
CLIENT_TRANSPORTS = (TCP, GRPC)
