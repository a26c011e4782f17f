"""Data files written before the value limits: a value over them (too deep, an int beyond a
double, a key with a lone surrogate) does not stop start-up; it is quarantined (docs/limits.md):
kept in the file, not served, and named in the log."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from statehub import DictionaryChange, SQLiteStore, StateDictionary
from statehub.bench.fleet import SERVE
from statehub.client import AsyncClient
from statehub.core.values import JsonValue
from statehub.endpoints.event_log import FILE_NAME, EventLog, LoggedEvent
from statehub.store.encoding import encode_value
from statehub.store.sqlite import DATA_FILE

DEEP_TEXT = "[" * 100_000 + "]" * 100_000  # json itself cannot decode this without recursion


def nested_list(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def old_rows() -> dict[bytes, tuple[str, int]]:
    """Rows an older statehub could have written: key bytes -> (text, format)."""
    return {
        b"deep600": encode_value(nested_list(600)),  # type: ignore[arg-type]
        b"deep100000": (DEEP_TEXT, 0),
        b"huge_int": encode_value(7**6000),
        "bad \ud800 key".encode("utf-8", "surrogatepass"): ("1", 0),
    }


def write_old_data_file(data: Path) -> None:
    with SQLiteStore(data) as store:
        state = StateDictionary(store=store)
        state.wait_durable(state.update_state("w", DictionaryChange({"good": [1, 2]})), 10)
    with sqlite3.connect(data / DATA_FILE) as conn:
        conn.executemany(
            "INSERT INTO state (key, value, format, mod_revision, create_revision, version) "
            "VALUES (?, ?, ?, 1, 1, 1)",
            [(key, text, form) for key, (text, form) in old_rows().items()],
        )
    conn.close()


def test_old_values_over_the_limits_are_quarantined_and_the_rest_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    write_old_data_file(data)
    with caplog.at_level(logging.WARNING), SQLiteStore(data) as store:
        state = StateDictionary(store=store)
        assert state.copy_content() == {"good": [1, 2]}
        reasons = {key: reason for key, _, _, reason in store.quarantined}
        assert set(reasons) == set(old_rows())
        assert "more than 32 containers deep" in reasons[b"deep600"]
        assert "nested too deep to decode" in reasons[b"deep100000"]
        assert "over the limit of 1023 bits" in reasons[b"huge_int"]
        assert "lone surrogate" in reasons["bad \ud800 key".encode("utf-8", "surrogatepass")]
        state.wait_durable(state.update_state("w", DictionaryChange({"huge_int": 1})), 10)
    for name in ("deep600", "deep100000", "huge_int", "bad \\ud800 key"):
        assert any(
            f"key '{name}' quarantined, not served" in record.getMessage()
            for record in caplog.records
        ), name

    with sqlite3.connect(data / DATA_FILE) as conn:
        kept = dict(conn.execute("SELECT key, value FROM quarantine").fetchall())
        assert {key: (text, 0 if key != b"huge_int" else 1) for key, text in kept.items()} == {
            key: row for key, row in old_rows().items()
        }
        row = conn.execute("SELECT value FROM state WHERE key = ?", (b"huge_int",)).fetchone()
        assert row == ("1",)
    conn.close()

    caplog.clear()
    with caplog.at_level(logging.WARNING), SQLiteStore(data) as store:
        assert store.quarantined == []  # once moved, a restart has nothing more to say
        assert StateDictionary(store=store).copy_content() == {"good": [1, 2], "huge_int": 1}
    assert not any("quarantined" in record.getMessage() for record in caplog.records)


async def read_all(port: int) -> dict[str, JsonValue]:
    async with AsyncClient("127.0.0.1", port, reconnect=False) as client:
        got = await client.get_all()
        async with client.subscribe(0) as changes:
            first = await asyncio.wait_for(anext(changes), 30)
            assert first.updates == got
        return got


def test_serve_starts_on_an_old_data_file_and_names_what_it_quarantined(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    write_old_data_file(data)
    process = subprocess.Popen(
        [*SERVE, "--port", "0", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "statehub serving on" in line, line
        served = re.search(r"serving on \S+:(\d+) ", line)
        assert served, line
        port = int(served.group(1))
        assert asyncio.run(read_all(port)) == {"good": [1, 2]}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    for name in ("deep600", "deep100000", "huge_int"):
        assert f"key '{name}' quarantined, not served" in stderr


def test_event_log_serves_what_it_can_and_names_what_it_quarantined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = EventLog.in_directory(tmp_path)
    log.append(LoggedEvent(1.0, "lab.x", 1, 2))
    log.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        conn.execute(
            "INSERT INTO endpoint_events (time, address, value_raw, raw_format, value_cal, "
            "cal_format) VALUES (2.0, 'lab.x', ?, ?, ?, 0)",
            (*encode_value(7**6000), DEEP_TEXT),
        )
    conn.close()
    size = (tmp_path / FILE_NAME).stat().st_size
    log = EventLog.in_directory(tmp_path)
    try:
        with caplog.at_level(logging.WARNING):
            assert log.history("lab.x") == [LoggedEvent(1.0, "lab.x", 1, 2)]
            assert log.history("lab.x") == [LoggedEvent(1.0, "lab.x", 1, 2)]
        named = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
        assert len(named) == 1 and "event 2 of lab.x quarantined, not served" in named[0]
    finally:
        log.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:  # left in the file
        assert conn.execute("SELECT count(*) FROM endpoint_events").fetchone() == (2,)
    conn.close()
    assert (tmp_path / FILE_NAME).stat().st_size >= size
    assert sys.getrecursionlimit() < 100_000
