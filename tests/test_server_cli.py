"""``statehub serve`` in a subprocess: serves, and shuts down cleanly on SIGTERM/Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from statehub import StateServer
from test_server_support import hello_roundtrip

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
            [*SERVE, "--port", str(server.port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{server.port}" in result.stderr and "in use" in result.stderr


def test_serve_help_documents_the_defaults() -> None:
    result = subprocess.run([*SERVE, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for text in ("38801", "38802", "--no-http", "127.0.0.1", "4194304", "--interval"):
        assert text in result.stdout
