"""``statehub bench fanout``: what it says when its peer cannot run (the figures are a bench's)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

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
