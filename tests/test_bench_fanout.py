"""``statehub bench fanout``: what it says when its peer cannot run (the figures are a bench's)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from statehub.bench import fanout
from statehub.cli.bench import bench


def test_peer_redis_without_redis_server_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(bench, ["fanout", "--peer", "redis", "--rounds", "1"])
    assert result.exit_code != 0
    assert "redis-server is not on PATH" in result.output


def test_unknown_peer_is_refused() -> None:
    result = CliRunner().invoke(bench, ["fanout", "--peer", "memcached"])
    assert result.exit_code != 0
    assert "memcached" in result.output


def test_every_workload_yields_a_figure_on_every_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One short round of the harness itself: no workload may fail on any target."""
    if fanout.redis_path() is None:
        pytest.skip("redis-server is not installed (make test installs it)")
    for name, value in [
        ("THROUGHPUT_SECONDS", 0.1),
        ("LATENCY_SECONDS", 0.1),
        ("DURABLE_SECONDS", 0.1),
        ("FANOUT_COUNTS", (20,)),
        ("PEER", "redis"),
        ("ROUNDS", 1),
    ]:
        monkeypatch.setattr(fanout, name, value)
    results = fanout.run()
    assert "failed" not in capsys.readouterr().err
    workloads = {result.workload.split(": ")[0] for result in results}
    assert len(workloads) == 11  # 2 + 2 with subscribers + 4 latency + memory, reach + durable
    for workload in workloads:
        rows = [r for r in results if r.workload.startswith(f"{workload}: ")]
        targets = [row.workload.removeprefix(f"{workload}: ") for row in rows]
        assert [target.split(" (")[0] for target in targets] == [
            "statehub over gRPC",
            "statehub over TCP",
            "Redis",
        ]
        if workload.startswith("server memory"):
            continue  # 20 connections may not move a server's RSS by a page: 0 is possible
        assert all(target.endswith("x Redis)") for target in targets[:2]), targets
        assert all(row.figure > 0 for row in rows), rows


def test_unknown_workload_family_is_refused_by_name() -> None:
    result = CliRunner().invoke(bench, ["fanout", "--workloads", "subscribers,bogus"])
    assert result.exit_code != 0
    assert "'subscribers,bogus'" in result.output
    assert "latency" in result.output  # the families it may choose among


def test_workloads_runs_only_the_families_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [
        ("THROUGHPUT_SECONDS", 0.1),
        ("WORKLOADS", ("subscribers",)),
        ("PEER", None),
        ("ROUNDS", 1),
    ]:
        monkeypatch.setattr(fanout, name, value)
    results = fanout.run()
    workloads = {result.workload.split(": ")[0] for result in results}
    assert workloads == {
        f"writes/s, {fanout.PIPELINE} in flight, {count} subscribers at interval 0"
        for count in (10, 100)
    }
