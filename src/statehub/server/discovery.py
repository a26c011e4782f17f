"""ESSD discovery: announce a server by UDP broadcast, as NanoVer servers do.

NanoVer's headsets and clients listen on UDP port 54545 for ESSD ("extremely simple
service discovery") messages: a JSON object ``{name, address, id, essd_version,
services}`` where ``services`` maps a service name to its port. A server sends one
every half second. statehub announces what NanoVer's current servers announce, its web
port under ``ws`` (``wss`` when the web edge serves TLS), which NanoVer's WebSocket
clients (``from_discovery``, ``nanover-record --autoconnect``, the XR client) look for;
and its gRPC port under ``multiplayer`` (the name NanoVer's gRPC-era clients looked for)
and under ``statehub``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

ESSD_PORT = 54545
ESSD_VERSION = "1.0.0"
#: NanoVer clients ignore a message over this size.
MAX_MESSAGE_BYTES = 1024
BROADCAST_ADDRESS = "255.255.255.255"
ANNOUNCE_INTERVAL = 0.5
#: Addresses that mean "every interface": announced as the address a client can reach.
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})


def essd_message(name: str, address: str, services: Mapping[str, int], hub_id: str) -> bytes:
    """One ESSD announcement; ``ValueError`` if it is over the size clients accept."""
    message = json.dumps(
        {
            "name": name,
            "address": address,
            "id": hub_id,
            "essd_version": ESSD_VERSION,
            "services": dict(services),
        }
    ).encode()
    if len(message) > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"ESSD announcement of {len(message)} bytes is over the {MAX_MESSAGE_BYTES}-byte "
            "limit clients accept: use a shorter server name"
        )
    return message


def announced_address(server_address: str, broadcast_address: str) -> str:
    """The address to announce: the server's own, or the interface facing the broadcast."""
    if server_address.strip("[]") not in WILDCARD_ADDRESSES and server_address != "localhost":
        return server_address
    if server_address == "localhost":
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:  # connecting a UDP socket sends nothing; it picks the outgoing interface
            probe.connect((broadcast_address, ESSD_PORT))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


@dataclass(frozen=True)
class Discovery:
    """Where and under which name to announce a server."""

    name: str
    address: str = BROADCAST_ADDRESS
    port: int = ESSD_PORT

    def announcer(
        self,
        server_address: str,
        tcp_port: int,
        grpc_port: int,
        web_port: int | None = None,
        *,
        web_tls: bool = False,
    ) -> Announcer:
        """The announcer for a server listening on ``server_address``: ``tcp_port``
        (statehub's sessions), ``grpc_port`` and ``web_port`` (the web edge, where
        NanoVer's WebSocket protocol is served)."""
        return Announcer(
            name=self.name,
            server_address=server_address,
            services=announced_services(tcp_port, grpc_port, web_port, web_tls=web_tls),
            broadcast_address=self.address,
            discovery_port=self.port,
        )


def announced_services(
    tcp_port: int, grpc_port: int, web_port: int | None, *, web_tls: bool = False
) -> dict[str, int]:
    """The services to announce: ``ws`` (or ``wss``) first, NanoVer's current clients'
    choice, then the gRPC port as ``multiplayer`` (what NanoVer's gRPC-era clients look
    for) and the plain-TCP session port as ``statehub`` (``statehub://``)."""
    services: dict[str, int] = {}
    if web_port is not None:
        services["wss" if web_tls else "ws"] = web_port
    services["multiplayer"] = grpc_port
    services["statehub"] = tcp_port
    return services


class Announcer:
    """Broadcasts an ESSD message every ``interval`` seconds while ``run()`` runs."""

    def __init__(
        self,
        *,
        name: str,
        server_address: str,
        services: Mapping[str, int],
        broadcast_address: str = BROADCAST_ADDRESS,
        discovery_port: int = ESSD_PORT,
        interval: float = ANNOUNCE_INTERVAL,
    ) -> None:
        self.hub_id = str(uuid.uuid4())
        self.target = (broadcast_address, discovery_port)
        self.interval = interval
        address = announced_address(server_address, broadcast_address)
        self.services = dict(services)
        self.message = essd_message(name, address, services, self.hub_id)

    async def run(self) -> None:
        """Announce until cancelled; a failed send is logged once and retried."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sender.setblocking(False)
            failing = False
            while True:
                try:
                    sender.sendto(self.message, self.target)
                    failing = False
                except OSError as error:
                    if not failing:
                        logger.warning("ESSD announcement to %s:%s failed: %s", *self.target, error)
                    failing = True
                await asyncio.sleep(self.interval)


__all__ = [
    "ESSD_PORT",
    "Announcer",
    "Discovery",
    "announced_address",
    "announced_services",
    "essd_message",
]
