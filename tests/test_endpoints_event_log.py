from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from statehub.endpoints.event_log import FILE_NAME, EventLog, LoggedEvent
from statehub.errors import DataFileError


def test_history_by_address_since_and_limit() -> None:
    log = EventLog()
    for second in range(5):
        log.append(LoggedEvent(100.0 + second, "a.x", second, second * 2))
    log.append(LoggedEvent(101.5, "a.y", "other", "other"))
    assert [e.value_raw for e in log.history("a.x")] == [0, 1, 2, 3, 4]
    assert [e.value_raw for e in log.history("a.x", since=102)] == [2, 3, 4]
    assert [e.value_raw for e in log.history("a.x", limit=2)] == [3, 4]
    assert log.history("nothing") == []


def test_values_keep_their_types() -> None:
    log = EventLog()
    values = [None, True, 1, 1.0, "1", [1, {"a": None}], {"b": [2.5]}, math.inf]
    for value in values:
        log.append(LoggedEvent(1.0, "k", value, value))
    back = [event.value_raw for event in log.history("k")]
    assert back == values
    assert [type(v) for v in back] == [type(v) for v in values]


def test_a_file_in_a_data_dir_outlives_the_log(tmp_path: Path) -> None:
    log = EventLog.in_directory(tmp_path / "data")
    log.append(LoggedEvent(5.0, "k", 1, 2))
    log.close()
    assert (tmp_path / "data" / FILE_NAME).exists()
    again = EventLog.in_directory(tmp_path / "data")
    assert again.history("k") == [LoggedEvent(5.0, "k", 1, 2)]


def test_a_file_that_is_not_an_event_log_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    other = tmp_path / "endpoint-events.sqlite3"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE invoices (id INTEGER)")
    connection.commit()
    connection.close()
    before = other.read_bytes()
    with pytest.raises(DataFileError, match="another application"):
        EventLog.in_directory(tmp_path)
    assert other.read_bytes() == before


def test_garbage_event_log_is_refused_naming_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "endpoint-events.sqlite3"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(DataFileError, match=r"endpoint-events\.sqlite3.*not an SQLite database"):
        EventLog.in_directory(tmp_path)
    assert garbage.read_bytes() == b"this is not a database at all" * 100
