"""``statehub serve --auth --tls-*`` in a subprocess, driven by the client commands."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner, Result

from statehub import StateServer
from statehub.cli import main
from statehub.cli.serve import reload_identities
from support.auth import TOKENS, identities, write_identities
from support.polling import eventually_sync

SERVE = [sys.executable, "-c", "from statehub.cli import main; main()", "serve", "--port", "0"]


def _serving(*arguments: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [*SERVE, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"serving on [0-9.]+:(\d+)", line)
    if match is None:
        process.kill()
        pytest.fail(f"unexpected first line {line!r}; stderr: {process.communicate()[1]}")
    return process, int(match.group(1))


def _stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, wait, and return what it wrote on stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return stderr


def test_serving_other_machines_without_auth_warns() -> None:
    process, _ = _serving("--host", "0.0.0.0")
    assert "WARNING: serving on 0.0.0.0 without --auth" in _stop(process)
    process, _ = _serving("--host", "127.0.0.1")
    assert "WARNING" not in _stop(process)


def test_serving_other_machines_with_auth_but_no_tls_warns(tmp_path: Path) -> None:
    ids = tmp_path / "identities.yaml"
    ids.write_text(identities())
    process, _ = _serving("--host", "0.0.0.0", "--auth", str(ids))
    assert "with --auth but without TLS" in _stop(process)


def test_a_bad_identities_file_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "ids.yaml"
    bad.write_text("users: {bob: {roles: [nobody]}}\n")
    result = subprocess.run(
        [*SERVE, "--auth", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert str(bad) in result.stderr
    assert "users.bob.roles.0: unknown role 'nobody'" in result.stderr


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    server.private_key_pem.write_to_path(paths["key"])
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture
def secured(tmp_path: Path, tls_files: dict[str, str]) -> Iterator[tuple[int, Path, int]]:
    ids = tmp_path / "identities.yaml"
    ids.write_text(identities())
    process, port = _serving(
        "--auth", str(ids), "--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"]
    )
    try:
        yield port, ids, process.pid
    finally:
        _stop(process)


def _cli(port: int, ca: str, user: str, *command: str) -> Result:
    url = f"statehubs://127.0.0.1:{port}"
    options = ["--host", url, "--tls-ca", ca, "--credential", TOKENS[user]]
    return CliRunner().invoke(main, [*command, *options])


def test_cli_clients_present_a_token_over_tls_and_sighup_reloads(
    secured: tuple[int, Path, int], tls_files: dict[str, str]
) -> None:
    port, ids, pid = secured
    assert _cli(port, tls_files["ca"], "walt", "set", "lab/w/x", "1").exit_code == 0
    got = _cli(port, tls_files["ca"], "rita", "get", "lab/w/x")
    assert (got.exit_code, got.output.strip()) == (0, "1")
    refused = _cli(port, tls_files["ca"], "rita", "set", "lab/w/x", "2")
    assert refused.exit_code == 1
    assert "PermissionDeniedError: token identity 'rita' lacks the write right" in refused.output
    ids.write_text(identities(rita="writer"))
    os.kill(pid, signal.SIGHUP)
    eventually_sync(
        lambda: _cli(port, tls_files["ca"], "rita", "set", "lab/w/x", "2").exit_code == 0,
        "the reloaded identities taking effect",
        timeout=20,
        interval=0.1,
    )
    plain = CliRunner().invoke(main, ["get", "lab/w/x", "--port", str(port)])
    assert plain.exit_code == 1  # no TLS: no session


def test_a_bad_file_at_reload_keeps_the_running_identities(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = tmp_path / "identities.yaml"
    server = StateServer(address="127.0.0.1", port=0, auth=write_identities(ids, identities()))
    running = server.hub.auth
    ids.write_text("users: {bob: {roles: [nobody]}}\n")
    reload_identities(server, ids)
    assert server.hub.auth is running
    assert "users.bob.roles.0: unknown role 'nobody'" in caplog.text
    ids.write_text(identities(rita=""))
    reload_identities(server, ids)
    assert server.hub.auth is not running
    server.close()
