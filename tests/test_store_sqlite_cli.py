"""``statehub serve --data DIR``: the state survives a restart; a bad data file stops start-up."""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
from pathlib import Path

from statehub.bench.durable import start_server
from statehub.bench.fleet import SERVE
from statehub.client import AsyncClient
from statehub.core.values import JsonValue
from statehub.store.sqlite import DATA_FILE

VALUES = {
    "int": 1,
    "float": 1.0,
    "nan": math.nan,
    "inf": -math.inf,
    "big": 2**100,
    "nested": {"b": [1, 2.5, None, True, {"deep": [-(2**70)]}], "a": {}},
}


async def set_values(port: int) -> None:
    async with AsyncClient("127.0.0.1", port, reconnect=False) as client:
        await client.update(VALUES)
        await client.remove("nan")
        await client.set("nan", math.nan)


async def get_values(port: int) -> dict[str, JsonValue]:
    async with AsyncClient("127.0.0.1", port, reconnect=False) as client:
        return await client.get_all()


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_state_survives_a_restart_of_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for durability in ("disk", "memory"):
        process, port = start_server(str(data), durability, stderr=None)
        try:
            asyncio.run(set_values(port))
        finally:
            stop(process)
        process, port = start_server(str(data), durability, stderr=None)
        try:
            restored = asyncio.run(get_values(port))
        finally:
            stop(process)
        assert set(restored) == set(VALUES)
        for key, value in VALUES.items():
            got = restored[key]
            assert type(got) is type(value), key
            assert got == value or (isinstance(got, float) and math.isnan(got)), key
        nested = restored["nested"]
        assert isinstance(nested, dict) and type(nested["b"][1]) is float


def test_a_garbage_data_file_stops_start_up_with_its_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / DATA_FILE
    garbage = b"this is not a database, it is a shopping list\n" * 100
    path.write_bytes(garbage)
    result = subprocess.run(
        [*SERVE, "--port", "0", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert str(path) in result.stderr
    assert "not an SQLite database" in result.stderr
    assert "statehub serving" not in result.stdout
    assert path.read_bytes() == garbage


def test_durability_without_data_is_a_usage_error() -> None:
    result = subprocess.run(
        [*SERVE, "--port", "0", "--durability", "memory"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--durability needs --data" in result.stderr
