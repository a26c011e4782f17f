"""Checking an SQLite data file before using it: ours, readable, intact, or refuse.

Every statehub data file carries ``PRAGMA application_id`` (which file it is) and
``PRAGMA user_version`` (its schema version). ``check_sqlite_file`` only reads, so a file
that fails the check (garbage, another application's database, another schema version,
damage) is left exactly as it was and start-up stops with a message naming it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from statehub.errors import DataFileError


def check_sqlite_file(
    conn: sqlite3.Connection,
    path: str | Path,
    *,
    application_id: int,
    schema_version: int,
    tables: Iterable[str],
    upgradable: Iterable[int] = (),
) -> bool:
    """Check the database ``conn`` has open at ``path``; True if it is empty (to create).

    Raises ``DataFileError`` naming ``path`` if it is not an SQLite database, belongs to
    another application, has another schema version (than ``schema_version`` or one of
    ``upgradable``, which the caller upgrades), lacks one of ``tables`` or fails
    ``PRAGMA quick_check``. The caller creates the schema (with ``application_id`` and
    ``schema_version``) when this returns True.
    """
    try:
        found_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        present = sorted(
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        )
        if found_id == 0 and not present:
            return True
        if found_id != application_id:
            raise DataFileError(
                f"{path} is an SQLite database of another application "
                f"(application_id {found_id:#x}, tables: {', '.join(present) or 'none'}); "
                "statehub changed nothing in it. Point --data at another directory."
            )
        if version != schema_version and version not in set(upgradable):
            raise DataFileError(
                f"{path} has statehub schema version {version}, this statehub reads "
                f"version {schema_version}; statehub changed nothing in it."
            )
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
        missing = sorted(set(tables) - set(present))
        if problems != ["ok"] or missing:
            raise DataFileError(
                f"{path} is damaged ({'; '.join(problems)}"
                f"{'; missing tables: ' + ', '.join(missing) if missing else ''}); "
                "statehub changed nothing in it. Restore it from a backup or move it away."
            )
    except sqlite3.Error as error:
        raise file_error(path, error) from error
    return False


def file_error(path: str | Path, error: sqlite3.Error) -> DataFileError:
    """A ``DataFileError`` naming ``path`` and saying in plain words what SQLite reported."""
    text = str(error)
    if "locked" in text or "busy" in text:
        reason = "it is in use by another process (another statehub on the same --data?)"
    elif isinstance(error, sqlite3.DatabaseError) and "not a database" in text:
        reason = "it is not an SQLite database (garbage or another kind of file)"
    elif "readonly" in text or "read-only" in text:
        reason = "it cannot be written (read-only file or directory)"
    else:
        reason = "it cannot be read"
    return DataFileError(f"cannot open {path}: {reason} [{text}]; statehub changed nothing in it")
