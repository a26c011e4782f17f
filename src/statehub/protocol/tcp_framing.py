"""How session frames travel over a plain TCP connection (both ends share this).

Each frame is sent as a 4-byte big-endian length followed by the frame's bytes.
"""

from __future__ import annotations

import socket

#: Bytes of the length that precedes every frame.
LENGTH_BYTES = 4
#: A client's own bound on a frame from the server (the server's frames stay far below).
MAX_SERVER_FRAME = 1 << 30
#: Keepalive probes sent before a silent peer is given up.
_KEEPALIVE_PROBES = 3


def encode_length(frame: bytes) -> bytes:
    """The length prefix of ``frame``."""
    return len(frame).to_bytes(LENGTH_BYTES, "big")


def set_keepalive(sock: socket.socket, idle: float, timeout: float) -> None:
    """Let the kernel notice a vanished peer within about ``idle + timeout`` seconds.

    Keepalive probes cover an idle connection; TCP_USER_TIMEOUT covers one whose sent
    data stays unacknowledged (a subscriber that vanished while changes flow to it).
    TCP_NODELAY: a frame is a whole message, so waiting to coalesce only adds latency.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; other systems keep their defaults
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, round(idle)))
        interval = max(1, round(timeout / _KEEPALIVE_PROBES))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _KEEPALIVE_PROBES)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        milliseconds = max(1, round((idle + timeout) * 1000))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)
