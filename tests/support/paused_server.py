"""``statehub serve`` in a subprocess that a test can freeze (SIGSTOP) and thaw (SIGCONT).

A frozen server keeps its TCP connections open but answers nothing: what a client sees
of a server stuck in a long GC pause, swapped out, or stopped in a debugger.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from support.client_servers import free_port
from support.polling import eventually_sync


class PausedServer:
    """A ``statehub serve`` process on loopback, reached at ``url`` (plain TCP)."""

    def __init__(self, process: subprocess.Popen[bytes], tcp_port: int) -> None:
        self.process = process
        self.url = f"statehub+tcp://127.0.0.1:{tcp_port}"
        self._tcp_port = tcp_port

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Poll until the TCP port accepts connections (the process has started)."""
        eventually_sync(self._accepts, "statehub serve listening", timeout=timeout)

    def _accepts(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"statehub serve exited with {self.process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", self._tcp_port), timeout=1).close()
        except OSError:
            return False
        return True


@contextmanager
def paused_server() -> Iterator[PausedServer]:
    """A running server process; killed (after a SIGCONT, so it can die) when done."""
    grpc_port, tcp_port = free_port(), free_port()
    command = [sys.executable, "-c", "from statehub.cli import main; main()", "serve"]
    process = subprocess.Popen(
        [*command, "--port", str(grpc_port), "--tcp-port", str(tcp_port), "--no-http"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PausedServer(process, tcp_port)
    try:
        server.wait_listening()
        yield server
    finally:
        server.resume()
        process.kill()
        process.wait()
