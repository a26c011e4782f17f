"""The package says what it is: version, licence, classifiers."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import statehub

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_installed_distributions() -> None:
    assert statehub.__version__ == importlib.metadata.version("statehub")


def test_license_file_matches_the_declared_license() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "Typing :: Typed" in project["classifiers"]


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
    assert "statehub.cli.client_commands" in loaded
    for heavy in ("pydantic", "yaml", "sqlite3", "google.protobuf", "rich", "statehub.server"):
        assert not {m for m in loaded if m == heavy or m.startswith(heavy + ".")}, heavy
