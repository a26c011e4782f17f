"""Helpers for the client tests: polling with a deadline, free ports, servers in threads."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from statehub.serving.state_server import StateServer


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail the test if ``timeout`` s pass first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


async def eventually_async(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Like ``eventually`` for a check that has to await (a request to the server)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def eventually_sync(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def threaded_server(port: int = 0) -> StateServer:
    """A StateServer on 127.0.0.1 running in a background thread (for blocking tests)."""
    return StateServer(address="127.0.0.1", port=port).start_in_thread()
