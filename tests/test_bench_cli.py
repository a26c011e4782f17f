"""``statehub bench``: progress on stderr, tables on stdout, ``--json FILE``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from statehub.bench.table import Result
from statehub.cli import main
from statehub.cli.bench import GROUPS


def test_bench_writes_json_and_shows_progress_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A group of one fixed row: this tests the command's plumbing, not a measurement.
    monkeypatch.setitem(GROUPS, "tiny", ("Tiny group", lambda: [Result("one op", 1234.5, "ops/s")]))
    path = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "tiny", "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert "| one op" in result.stdout and "1,234" in result.stdout
    assert "done: Tiny group" in result.stderr and "done" not in result.stdout
    report = json.loads(path.read_text())
    assert report["machine"] and report["groups"]["tiny"] == {
        "title": "Tiny group",
        "results": [{"workload": "one op", "figure": 1234.5, "unit": "ops/s"}],
    }


def test_bench_rejects_unknown_groups() -> None:
    result = CliRunner().invoke(main, ["bench", "nope"])
    assert result.exit_code == 2 and "unknown group(s) nope" in result.stderr
