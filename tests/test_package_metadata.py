"""The package says what it is: version, licence, classifiers."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import statehub

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_installed_distributions() -> None:
    assert statehub.__version__ == importlib.metadata.version("statehub")


def test_license_file_matches_the_declared_license() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "Typing :: Typed" in project["classifiers"]


ADDRESS_VARIABLES = ("STATEHUB_URL", "STATEHUB_HOST", "STATEHUB_PORT")


def test_every_public_name_resolves() -> None:
    for name in statehub.__all__:
        assert getattr(statehub, name) is not None, name


def test_statehub_get_loads_nothing_only_serve_or_endpoints_need() -> None:
    code = (
        "import sys, click, statehub.cli as cli\n"
        "cli.main.get_command(click.Context(cli.main), 'get')\n"
        "cli.main.get_command(click.Context(cli.main), 'set')\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "statehub.cli.key_commands" in loaded
    for heavy in ("pydantic", "yaml", "sqlite3", "google.protobuf", "rich", "statehub.server"):
        assert not {m for m in loaded if m == heavy or m.startswith(heavy + ".")}, heavy


@pytest.mark.parametrize(
    "address",
    [
        {"STATEHUB_URL": "statehub://127.0.0.1:{port}"},
        {"STATEHUB_HOST": "127.0.0.1", "STATEHUB_PORT": "{port}"},
        {"STATEHUB_URL": "statehub+tcp://127.0.0.1:{port}"},
    ],
    ids=["default-scheme", "host-and-port", "explicit-tcp"],
)
def test_statehub_get_on_the_default_address_loads_only_what_it_uses(
    address: dict[str, str],
) -> None:
    """A real ``statehub get`` against a server on its default transport (plain TCP), the
    address given as users give it: the transport modules it does not use are never
    imported (each costs a quarter of a second at start-up), nor the blocking client."""
    from statehub.serving.state_server import StateServer

    server = StateServer(address="127.0.0.1", port=0).start_in_thread()
    try:
        code = (
            "import sys\n"
            "from statehub.cli import main\n"
            "for arguments in (['set', 'greeting', '1'], ['get', 'greeting']):\n"
            "    try:\n"
            "        main(arguments)\n"
            "    except SystemExit as exit:\n"
            "        assert not exit.code, exit.code\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **{
                    name: value
                    for name, value in os.environ.items()
                    if name not in ADDRESS_VARIABLES
                },
                **{name: value.format(port=server.tcp_port) for name, value in address.items()},
            },
        )
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "1"  # the value, read back over TCP
    loaded = set(result.stderr.split())
    for heavy in (
        "grpc",
        "aiohttp",
        "rich",
        "redis",
        "google.protobuf",
        "statehub.server",
        "asyncio",
        "ssl",
        "statehub.client.async_client",
    ):
        assert not {m for m in loaded if m == heavy or m.startswith(heavy + ".")}, heavy
