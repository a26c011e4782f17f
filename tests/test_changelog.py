"""CHANGELOG.md keeps its format (Keep a Changelog) and has the version the package says."""

from __future__ import annotations

import re
from pathlib import Path

import statehub

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_changelog_has_unreleased_then_versions_newest_first_with_dates() -> None:
    headings = re.findall(r"^## (.*)$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == "[Unreleased]"
    releases = [re.fullmatch(r"\[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}", h) for h in headings[1:]]
    assert all(releases), headings
    versions = [_version(match.group(1)) for match in releases if match]
    assert versions == sorted(versions, reverse=True)
    assert _version(statehub.__version__) in versions  # a release adds its section


def test_the_changelog_sorts_changes_by_keep_a_changelog_kinds() -> None:
    kinds = set(re.findall(r"^### (.*)$", (ROOT / "CHANGELOG.md").read_text(), re.M))
    assert kinds <= KINDS, kinds - KINDS


def test_the_changelog_and_readme_link_the_versioning_policy() -> None:
    assert (ROOT / "docs" / "versioning.md").is_file()
    assert "(docs/versioning.md)" in (ROOT / "CHANGELOG.md").read_text()
    assert "(docs/versioning.md)" in (ROOT / "README.md").read_text()
