"""``statehub serve`` in a subprocess: serves, and shuts down cleanly on SIGTERM/Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from statehub import StateServer
from support.raw_session import hello_roundtrip

SERVE = [sys.executable, "-c", "from statehub.cli import main; main()", "serve"]


def _start(*arguments: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [*SERVE, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
    if match is None:
        process.kill()
        pytest.fail(f"unexpected first line {line!r}; stderr: {process.communicate()[1]}")
    return process, int(match.group(1))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_a_signal_then_exits_cleanly(signum: signal.Signals) -> None:
    process, port = _start("--port", "0", "--host", "127.0.0.1")
    try:
        assert hello_roundtrip(port)["ok"]
        process.send_signal(signum)
        assert process.wait(timeout=20) == 0
        assert "stopping" in (process.stdout.read() if process.stdout else "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_on_a_port_in_use_fails_with_a_clear_message() -> None:
    with StateServer(address="127.0.0.1", port=0) as server:
        result = subprocess.run(
            [*SERVE, "--port", "0", "--tcp-port", str(server.port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{server.port}" in result.stderr and "in use" in result.stderr


def test_serve_help_documents_the_defaults() -> None:
    result = subprocess.run([*SERVE, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for text in ("38801", "38802", "38803", "--no-http", "127.0.0.1", "4194304", "--interval"):
        assert text in result.stdout


def test_a_port_in_use_gives_one_line_and_no_grpc_core_noise() -> None:
    with StateServer(address="127.0.0.1", port=0) as server:
        result = subprocess.run(
            [*SERVE, "--port", "0", "--grpc-port", str(server.grpc_port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: cannot listen for gRPC on 127.0.0.1:{server.grpc_port}: the port is in use"
    ]


def test_verbose_serve_logs_statehub_only_and_says_serving_on_once() -> None:
    process, port = _start("--port", "0", "-v")
    try:
        assert hello_roundtrip(port)["ok"]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    logged = [line for line in err.splitlines() if line.strip()]
    assert logged and all(" statehub." in line for line in logged), err
    assert "session" in err  # -v shows statehub's own session logs
    assert (out + err).count("serving on") == 0  # the first line, read by _start, was the one
