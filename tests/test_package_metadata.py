"""The package says what it is: version, licence, classifiers."""

from __future__ import annotations

import importlib.metadata
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
