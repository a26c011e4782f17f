"""The table of logged endpoint values (dripline's slow-controls database, embedded).

One SQLite table ``endpoint_events(id, time, address, value_raw, value_cal)``; values are
stored as the state store stores them, so their types come back exactly (an int stays an
int). In memory by default; ``EventLog.in_directory(data_dir)`` keeps it in
``endpoint-events.sqlite3`` there, checked like the state file before anything is written:
a file that is not statehub's event log stops start-up and is left as it was. An event
whose value is over the limits of docs/limits.md (logged by an older statehub) is
quarantined: left in the file, never served, and named once in the server's log. Safe to
use from several threads (one connection behind a lock).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statehub.core.values import JsonValue, checked_copy
from statehub.store.datafile import check_sqlite_file, file_error
from statehub.store.encoding import decode_value, encode_value

logger = logging.getLogger(__name__)

FILE_NAME = "endpoint-events.sqlite3"
#: ``PRAGMA application_id`` of an endpoint event log ("STHE").
APPLICATION_ID = 0x53544845
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE endpoint_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    address TEXT NOT NULL,
    value_raw TEXT NOT NULL,
    raw_format INTEGER NOT NULL,
    value_cal TEXT NOT NULL,
    cal_format INTEGER NOT NULL
);
CREATE INDEX endpoint_events_by_address ON endpoint_events (address, time);
"""


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """A logged value: ``time`` in seconds since the epoch (UTC)."""

    time: float
    address: str
    value_raw: JsonValue
    value_cal: JsonValue

    def to_dict(self) -> dict[str, JsonValue]:
        return {
            "time": self.time,
            "address": self.address,
            "value_raw": self.value_raw,
            "value_cal": self.value_cal,
        }


class EventLog:
    """Appends logged values and reads them back by address and time."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._quarantined: set[int] = set()  # ids of events over the value limits
        try:
            self._connection = sqlite3.connect(self.path, check_same_thread=False)
            fresh = check_sqlite_file(
                self._connection,
                self.path,
                application_id=APPLICATION_ID,
                schema_version=SCHEMA_VERSION,
                tables=("endpoint_events",),
            )
            if self.path != ":memory:":
                # WAL with NORMAL sync: an append costs no fsync of its own, and a crash
                # loses at most the last few events, never the file.
                self._connection.execute("PRAGMA journal_mode=WAL")
                self._connection.execute("PRAGMA synchronous=NORMAL")
            if fresh:
                self._connection.executescript(
                    f"BEGIN IMMEDIATE; PRAGMA application_id={APPLICATION_ID}; "
                    f"PRAGMA user_version={SCHEMA_VERSION}; {_SCHEMA} COMMIT;"
                )
        except sqlite3.Error as error:
            raise file_error(self.path, error) from error

    @classmethod
    def in_directory(cls, data_dir: str | Path) -> EventLog:
        """The log in ``data_dir/endpoint-events.sqlite3`` (the directory is created)."""
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / FILE_NAME)

    def append(self, event: LoggedEvent) -> None:
        row = (
            event.time,
            event.address,
            *encode_value(event.value_raw),
            *encode_value(event.value_cal),
        )
        with self._lock, self._connection:
            self._connection.execute(
                "INSERT INTO endpoint_events "
                "(time, address, value_raw, raw_format, value_cal, cal_format) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

    def history(
        self, address: str, since: float | None = None, limit: int | None = None
    ) -> list[LoggedEvent]:
        """Events of ``address`` at or after ``since``, oldest first; the newest ``limit``."""
        query = (
            "SELECT id, time, address, value_raw, raw_format, value_cal, cal_format "
            "FROM endpoint_events WHERE address = ?"
        )
        parameters: list[Any] = [address]
        if since is not None:
            query += " AND time >= ?"
            parameters.append(since)
        query += " ORDER BY time DESC, id DESC"
        if limit is not None:
            query += " LIMIT ?"
            parameters.append(limit)
        with self._lock:
            rows = self._connection.execute(query, parameters).fetchall()
        events = []
        for event_id, time, name, raw, raw_form, cal, cal_form in reversed(rows):
            try:
                # checked: an older statehub may have logged a value over the limits
                value_raw = checked_copy(decode_value(raw, raw_form), name)
                value_cal = checked_copy(decode_value(cal, cal_form), name)
            except (ValueError, TypeError, RecursionError) as error:
                self._quarantine(event_id, name, error)
                continue
            events.append(LoggedEvent(time, name, value_raw, value_cal))
        return events

    def _quarantine(self, event_id: int, address: str, error: BaseException) -> None:
        """Leave an event no protocol could carry in the file, unserved, and say so once."""
        with self._lock:
            if event_id in self._quarantined:
                return
            self._quarantined.add(event_id)
        reason = "nested too deep to decode" if isinstance(error, RecursionError) else error
        logger.warning(
            "%s: event %d of %s quarantined, not served: %s. It stays in the file "
            "(docs/limits.md).",
            self.path,
            event_id,
            address,
            reason,
        )

    def close(self) -> None:
        with self._lock:
            self._connection.close()
