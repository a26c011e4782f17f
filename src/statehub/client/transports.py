"""The ways a client's session frames travel: a gRPC stream, a WebSocket or plain TCP.

``Connection`` speaks frames of bytes and knows nothing else of the transport: it opens a
``FrameStream`` (``client/frame_stream.py``) with ``open_frame_stream`` and reads, writes
and closes it. An address starting ``ws://`` or ``wss://`` is a WebSocket URL (path
``/v1/session`` unless given); one starting ``statehub://``, ``statehubs://`` (TLS) or
their explicit aliases ``statehub+tcp://``, ``statehubs+tcp://`` names the plain-TCP
transport's ``host:port``; anything else is a gRPC host name, with the port given apart
(``Target.dial_address``).

Each transport lives in a module of its own, imported when a stream of its kind is
opened: a client on plain TCP never loads grpc or aiohttp (a quarter of a second each at
start-up, which ``statehub get`` would pay on every run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from statehub.client.frame_stream import FrameStream

if TYPE_CHECKING:
    from statehub.client.tls import ClientTls


def is_websocket_url(address: str) -> bool:
    return address.startswith(("ws://", "wss://"))


def is_tcp_url(address: str) -> bool:
    return address.startswith(
        ("statehub://", "statehubs://", "statehub+tcp://", "statehubs+tcp://")
    )


def describe_target(address: str, port: int) -> str:
    return address if is_websocket_url(address) or is_tcp_url(address) else f"{address}:{port}"


async def open_frame_stream(address: str, port: int, tls: ClientTls | None = None) -> FrameStream:
    """Connect to the server (over TLS with ``tls``); ``StreamBroken`` if it cannot be reached."""
    if is_websocket_url(address):
        from statehub.client.websocket_frames import WebSocketFrames

        return await WebSocketFrames.open(address, tls)
    if is_tcp_url(address):
        from statehub.client.tcp_frames import TcpFrameStream

        return await TcpFrameStream.open(address, tls)
    from statehub.client.grpc_frames import GrpcFrames

    return await GrpcFrames.open(f"{address}:{port}", tls)
