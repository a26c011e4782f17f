"""``statehub bench client --peer redis``: every row of the table, at a tiny size.

The figures are not checked (timed assertions do not belong in tests): only that each
workload ran on both targets through the public clients and got its ratio.
"""

from __future__ import annotations

import math
import re

import pytest
from click.testing import CliRunner

from statehub.bench import clients
from statehub.cli import main
from support.client_servers import free_port


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SECONDS": 0.2,
        "SUBSCRIBERS": 3,
        "LATENCY_SUBSCRIBERS": 2,
        "LATENCY_RATE": 100,
        "IDLE_COUNTS": (4, 8),
        "CLI_RUNS": 2,
    }.items():
        monkeypatch.setattr(clients, name, value)


def test_bench_client_prints_each_workload_for_both_targets_with_its_ratio(tiny: None) -> None:
    result = CliRunner().invoke(main, ["bench", "client", "--peer", "redis", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == (
        "| workload (public clients) | statehub (statehub://) | redis-py | statehub / redis-py |"
    )
    expected = [row.workload for row in clients.rows()]
    assert [line.split(" | ")[0].removeprefix("| ") for line in table[1:]] == expected
    assert "server memory per idle subscriber (8)" in expected  # the sizes asked for
    for line in table[1:]:
        _, statehub, redis, ratio = line.strip("| ").split(" | ")
        assert re.fullmatch(r"[\d.,]+ \S+", statehub), line
        assert re.fullmatch(r"[\d.,]+ \S+", redis), line
        assert re.fullmatch(r"\d+\.\d\d( \(lower is better\))?", ratio), line
    assert "round 1/1: redis-py" in result.stderr


def test_bench_client_without_a_peer_measures_statehub_alone(tiny: None) -> None:
    result = CliRunner().invoke(main, ["bench", "client", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("| async")]
    assert rows and all(line.endswith("| - | - |") for line in rows), rows


def test_a_failing_statehub_get_gives_nan_and_logs_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI row of a round whose ``statehub get`` fails (here: no server on the port)
    is NaN, with the command's error on stderr, and the run goes on."""
    nobody = clients.Served("statehub", free_port(), pid=0)
    assert math.isnan(clients._cli_get_ms(nobody))
    logged = capsys.readouterr().err
    assert "['get', 'bench.0'] on statehub (statehub://) failed:" in logged
    assert "ConnectionLostError" in logged


def test_a_row_s_median_leaves_out_the_rounds_that_failed() -> None:
    row = clients.Row("server memory per idle subscriber (10,000)", "KiB")
    row.figures["statehub"] = [8.0, float("nan"), 9.0]
    row.figures["redis"] = [float("nan")]
    assert row.median("statehub") == 8.5
    assert math.isnan(row.median("redis") or 0.0)
    assert row.median("nobody") is None
