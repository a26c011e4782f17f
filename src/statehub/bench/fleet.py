"""Real processes for the cluster benchmark and tests: redis-server, Sentinels, and
``statehub serve --store`` servers, each on a free loopback port.

Every function that starts a process returns it; the caller stops it (``stop``) in a
``finally``. Nothing here waits by sleeping: readiness is the process itself answering, or the
"serving on" line printed.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from statehub.extras import require_extra

if TYPE_CHECKING:
    import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SERVE = [sys.executable, "-c", "from statehub.cli import main; main()", "serve"]
START_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisProcess:
    """A redis-server on 127.0.0.1:``port`` keeping its files in ``directory``."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    arguments: list[str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        import redis

        return redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=10)


def start_redis(
    directory: Path,
    *,
    port: int | None = None,
    aof_always: bool = False,
    extra: Sequence[str] = (),
) -> RedisProcess:
    """A redis-server without persistence, or with AOF ``appendfsync always``."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port if port is not None else free_port()
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "always"] if aof_always else ["--appendonly", "no"]
    )
    arguments = [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        str(directory),
        *persistence,
        *extra,
    ]
    process = subprocess.Popen(
        [REDIS_SERVER, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    redis_process = RedisProcess(process, port, directory, arguments)
    try:
        wait_redis_ready(redis_process.port, process)
    except BaseException:
        stop(process)
        raise
    return redis_process


def restart_redis(old: RedisProcess) -> RedisProcess:
    """Start redis-server again on the same port and directory (after ``kill -9``)."""
    process = subprocess.Popen(
        [REDIS_SERVER, *old.arguments], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    new = RedisProcess(process, old.port, old.directory, old.arguments)
    try:
        wait_redis_ready(new.port, process)
    except BaseException:
        stop(process)
        raise
    return new


def wait_redis_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    """Return once ``process`` answers on ``port`` and has loaded its data."""
    require_extra("redis", "a Redis benchmark")
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=5)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited ({process.returncode})")
            try:
                # Our process, not another one that had the port first (it would exit).
                if client.info("server")["process_id"] == process.pid:
                    return
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} not ready in {START_TIMEOUT} s")
            time.sleep(0.02)
    finally:
        client.close()


@dataclass(frozen=True)
class ServedPorts:
    """The ports a ``statehub serve`` printed at start (``http``: None without a web edge)."""

    tcp: int
    grpc: int
    http: int | None


def start_serve(
    *arguments: str, stderr: int | None = subprocess.DEVNULL
) -> tuple[subprocess.Popen[str], int]:
    """``statehub serve --port 0 ARGUMENTS`` in a child process; the process and its
    plain-TCP session port (what ``statehub://`` and clients given a port reach)."""
    process, ports = start_serve_ports(*arguments, stderr=stderr)
    return process, ports.tcp


def start_serve_ports(
    *arguments: str, stderr: int | None = subprocess.DEVNULL
) -> tuple[subprocess.Popen[str], ServedPorts]:
    """``statehub serve --port 0 ARGUMENTS`` in a child process; the process and every
    port it serves, read from its start-up lines (the gRPC line comes last)."""
    process = subprocess.Popen(
        [*SERVE, "--port", "0", *arguments], stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    try:
        return process, read_served_ports(process)
    except BaseException:
        stop(process)
        raise


def read_served_ports(process: subprocess.Popen[str]) -> ServedPorts:
    """The ports a starting ``statehub serve`` prints (its gRPC line comes last);
    ``RuntimeError`` with what it printed if it ends before."""
    assert process.stdout is not None
    found: dict[str, int] = {}
    lines = []
    while "grpc" not in found:
        line = process.stdout.readline()
        lines.append(line)
        if not line:
            raise RuntimeError(f"statehub serve did not start: {lines!r}")
        for name, pattern in _START_UP_LINES.items():
            if matched := pattern.search(line):
                found[name] = int(matched.group(1))
    return ServedPorts(found["tcp"], found["grpc"], found.get("http"))


#: ``statehub serve``'s start-up lines (``cli.serve.served_addresses``), by the port each names.
_START_UP_LINES = {
    "tcp": re.compile(r"^statehub serving on \S+:(\d+) "),
    "http": re.compile(r"^statehub web edge on \S+:(\d+)/"),
    "grpc": re.compile(r"^statehub gRPC on \S+:(\d+) "),
}


def start_statehub(
    store_url: str, *extra: str, stderr: int | None = subprocess.DEVNULL
) -> tuple[subprocess.Popen[str], int]:
    """``statehub serve --store URL`` on a free port; the process and its port."""
    return start_serve("--store", store_url, *extra, stderr=stderr)


def stop(process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate ``process`` (kill it if it does not go within ``timeout`` s) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def start_sentinel(directory: Path, primary_port: int, service: str = "mymaster") -> RedisProcess:
    """A Sentinel watching the primary on ``primary_port`` (quorum 2, down after 1 s)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "sentinel.conf"  # Sentinel rewrites it: it must be its own file
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor {service} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {service} 1000\n"
        f"sentinel failover-timeout {service} 10000\n"
        f"sentinel parallel-syncs {service} 1\n"
    )
    arguments = [str(config), "--sentinel"]
    process = subprocess.Popen(
        [REDIS_SERVER, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sentinel = RedisProcess(process, port, directory, arguments)
    try:
        wait_redis_ready(port, process)
    except BaseException:
        stop(process)
        raise
    return sentinel
