"""``statehub serve --settings FILE``: real servers take their settings from a TOML file,
the environment overrides it and flags override both; a bad file exits 2 naming file and
key; the documented example and the list of keys stay true."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from statehub import Client
from statehub.cli import main
from statehub.cli.serve import serve
from statehub.cli.settings import load_settings, settings_of
from support.auth import identities
from support.client_servers import free_port
from support.raw_session import hello_roundtrip

ROOT = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-c", "from statehub.cli import main; main()", "serve"]
DEADLINE = 30


@dataclass
class Served:
    port: int
    process: subprocess.Popen[str]
    stdout: str = ""
    stderr: str = ""


def _environment(variables: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the STATEHUB_ variables a shell may have set."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("STATEHUB_")}
    return {**clean, **variables}


@contextmanager
def _serving(
    *arguments: str, env: Mapping[str, str] = {}, cwd: Path | None = None
) -> Iterator[Served]:
    """``statehub serve`` in a process until the block ends, then SIGTERM; it must exit 0."""
    # stderr goes to a file and stdout is read through its own buffer at the end:
    # communicate() would read the pipe past the lines readline() has already buffered.
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [*SERVE, *arguments],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=_environment(env),
            cwd=cwd,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"serving on [^ ]*:(\d+)", line)
            if match is None:
                process.kill()
                process.wait()
                stderr.seek(0)
                pytest.fail(f"unexpected first line {line!r}; stderr: {stderr.read()}")
            served = Served(int(match.group(1)), process)
            yield served
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=DEADLINE)
            served.stdout = line + process.stdout.read()
            stderr.seek(0)
            served.stderr = stderr.read()
            assert process.returncode == 0, served.stderr
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=DEADLINE) as response:
        status: int = response.status
        return status


def test_a_settings_file_sets_ports_limits_and_data_and_the_server_uses_them(
    tmp_path: Path,
) -> None:
    http_port, tcp_port, grpc_port = free_port(), free_port(), free_port()
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    settings = etc / "settings.toml"
    settings.write_text(
        f'host = "127.0.0.1"\nport = 0\nhttp_port = {http_port}\ntcp_port = {tcp_port}\n'
        f"grpc_port = {grpc_port}\n"
        "max_message_bytes = 123456\nkeepalive = 7.5\n"
        'data = "state"  # relative: next to this file, not in the working directory\n'
        "[session_limit]\nmax_subscriptions = 1\n"
    )
    with _serving("--settings", str(settings), cwd=elsewhere) as served:
        assert served.port == tcp_port
        hello = hello_roundtrip(tcp_port)["ok"]
        assert (hello["max_message_bytes"], hello["keepalive_s"]) == (123456, 7.5)
        assert _get(f"http://127.0.0.1:{http_port}/readyz") == 200
        with Client(f"statehub+grpc://127.0.0.1:{grpc_port}") as over_grpc:
            assert over_grpc.get("from.settings", "not yet") == "not yet"
        with Client(f"statehub://127.0.0.1:{tcp_port}") as client:
            client.set("from.settings", 1)
            first = client.subscribe(prefix="from.")
            next(first)
            with pytest.raises(Exception, match="max_subscriptions=1"):
                next(client.subscribe(prefix="other."))
            first.close()
    assert (etc / "state" / "state.sqlite3").is_file()
    assert not (elsewhere / "state").exists()


# The same settings from the file, the environment and the command line: the closest wins.
# no_http is a flag: the environment turns off what the file turns on.
PRECEDENCE = [
    pytest.param({}, [], 100_000, False, id="file"),
    pytest.param(
        {"STATEHUB_SERVE_MAX_MESSAGE_BYTES": "200000", "STATEHUB_SERVE_NO_HTTP": "false"},
        [],
        200_000,
        True,
        id="environment-over-file",
    ),
    pytest.param(
        {"STATEHUB_SERVE_MAX_MESSAGE_BYTES": "200000"},
        ["--max-message-bytes", "300000"],
        300_000,
        False,
        id="flag-over-environment",
    ),
]


@pytest.mark.parametrize(("env", "flags", "max_bytes", "web"), PRECEDENCE)
def test_environment_overrides_the_file_and_flags_override_both(
    tmp_path: Path, env: dict[str, str], flags: list[str], max_bytes: int, web: bool
) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(
        'host = "127.0.0.1"\nport = 0\ngrpc_port = 0\nno_http = true\nmax_message_bytes = 100000\n'
    )
    with _serving("--settings", str(settings), *flags, env=env) as served:
        assert hello_roundtrip(served.port)["ok"]["max_message_bytes"] == max_bytes
    assert ("web edge on" in served.stdout) is web


def test_the_settings_file_may_come_from_statehub_settings_and_verbose_says_what_came_from_where(
    tmp_path: Path,
) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text('host = "127.0.0.1"\nport = 0\ngrpc_port = 0\n')
    env = {"STATEHUB_SERVE_SETTINGS": str(settings), "STATEHUB_SERVE_KEEPALIVE": "6"}
    with _serving("--no-http", "-v", env=env) as served:
        assert hello_roundtrip(served.port)["ok"]["keepalive_s"] == 6
    logged = served.stderr
    assert f"settings from {settings}: host, port, grpc_port" in logged
    assert "settings from the environment: STATEHUB_SERVE_KEEPALIVE" in logged
    assert "settings from the command line: no_http, verbose" in logged


BAD_FILES = [
    ("htp_port = 38802\n", "unknown key 'htp_port'; did you mean 'http_port'?"),
    ("http-port = 38802\n", "unknown key 'http-port'; did you mean 'http_port'?"),
    ("colour = 'blue'\n", "unknown key 'colour'"),
    ("port = '38801'\n", "port must be an integer, not a string ('38801')"),
    ("port = 3.5\n", "port must be an integer, not a float (3.5)"),
    ("port = 70000\n", "port: 70000 is not in the range 0<=x<=65535"),
    ("keepalive = 'soon'\n", "keepalive must be a float, not a string ('soon')"),
    ("no_http = 1\n", "no_http must be a boolean, not an integer (1)"),
    ("data = ['a']\n", "data must be a string, not an array (['a'])"),
    ("durability = 'fast'\n", "durability: 'fast' is not one of 'disk', 'memory'"),
    ("session_limit = 3\n", "session_limit must be a table of integers, not an integer (3)"),
    (
        "[session_limit]\nmax_subscription = 3\n",
        "unknown key 'session_limit.max_subscription'; "
        "did you mean 'session_limit.max_subscriptions'?",
    ),
    (
        "[session_limit]\nmax_leases = 'many'\n",
        "session_limit.max_leases must be an integer, not a string ('many')",
    ),
    ("[verbose]\n", "verbose must be a boolean, not a table ({})"),
    ("port = \n", "not valid TOML: Invalid value (at line 1, column 8)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_settings_file_exits_2_naming_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(text)
    result = CliRunner().invoke(main, ["serve", "--settings", str(settings)], env=_blank())
    assert result.exit_code == 2, result.output
    assert f"Error: {settings}: {message}" in result.output


def test_unknown_key_without_a_close_one_suggests_nothing(tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text("colour = 'blue'\n")
    result = CliRunner().invoke(main, ["serve", "--settings", str(settings)], env=_blank())
    assert result.output.strip().splitlines()[-1] == f"Error: {settings}: unknown key 'colour'"


def test_a_bad_settings_file_stops_the_process_with_status_2_before_it_listens(
    tmp_path: Path,
) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text('port = 0\ndata = "state"\nhtp_port = 1\n')
    result = subprocess.run(
        [*SERVE, "--settings", str(settings)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=_environment({}),
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error: {settings}: unknown key 'htp_port'; did you mean 'http_port'?"
    ]
    assert not (tmp_path / "state").exists()  # nothing started, nothing created


def _blank() -> dict[str, str | None]:
    """CliRunner's environment changes: the STATEHUB_ variables of this process unset."""
    return {name: None for name in os.environ if name.startswith("STATEHUB_")}


# -- the documentation stays true ----------------------------------------------------------


def _fenced(document: Path, language: str, first_line: str) -> str:
    """The ```language block of ``document`` whose first line is ``first_line``."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```", document.read_text(), re.M | re.S)
    found = [block for block in blocks if block.startswith(first_line)]
    assert len(found) == 1, f"{document.name}: no ```{language} block starting {first_line!r}"
    return str(found[0])


SERVICE = ROOT / "docs" / "service.md"


def _example() -> str:
    return _fenced(SERVICE, "toml", "# /etc/statehub/settings.toml")


def test_the_example_settings_file_in_the_docs_is_valid_and_starts_a_server(
    tmp_path: Path,
) -> None:
    example = tmp_path / "settings.toml"
    example.write_text(_example())
    assert load_settings(example, serve)  # every key known, every value of its type
    # The example's files are those of a lab machine: here the flags name test ones (and a
    # free port on loopback), and everything else comes from the example.
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "server.pem", tmp_path / "server-key.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    certificate.private_key_pem.write_to_path(str(key))
    (tmp_path / "identities.yaml").write_text(identities())
    with _serving(
        "--settings",
        str(example),
        *("--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--tcp-port", "0"),
        *("--grpc-port", "0"),
        *("--data", str(tmp_path / "data"), "--auth", str(tmp_path / "identities.yaml")),
        *("--tls-cert", str(cert), "--tls-key", str(key), "-v"),
    ) as served:
        assert served.port > 0
    assert "(statehubs://127.0.0.1:" in served.stdout
    assert (
        f"settings from {example}: keepalive, keepalive_timeout, durability, session_limit\n"
        in (served.stderr)
    )
    assert (tmp_path / "data" / "state.sqlite3").is_file()


def test_the_unit_in_the_docs_runs_the_example_settings_and_keeps_data_in_its_state_directory() -> (
    None
):
    unit = dict(
        line.split("=", 1)
        for line in _fenced(SERVICE, "ini", "# /etc/systemd/system/statehub.service").splitlines()
        if "=" in line and line[0] != "#"
    )
    assert unit["ExecStart"].endswith("statehub serve --settings /etc/statehub/settings.toml")
    assert 'data = "/var/lib/' + unit["StateDirectory"] + '"' in _example()
    assert unit["User"] == "statehub" and int(unit["LimitNOFILE"]) >= 65536
    assert unit["RestartPreventExitStatus"] == "2"  # a bad settings file: no restart loop


def test_the_settings_page_lists_every_key_with_its_type_flag_and_variable() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    table = page[page.index("## Every key") :]
    documented = [
        [cell.strip() for cell in row.strip("|").split("|")][:4]
        for row in table.splitlines()
        if row.startswith("| `")
    ]
    expected = [
        [f"`{s.key}`", s.toml_type, f"`{s.flag}`", f"`{s.envvar}`"] for s in settings_of(serve)
    ]
    assert documented == expected
