"""The last durable revision, recorded beside the data file, to notice lost changes.

SQLite in WAL mode keeps recent transactions in ``state.sqlite3-wal`` until a checkpoint
copies them into the main file. If that WAL is deleted, overwritten or truncated after a
crash, SQLite opens the older main file without complaint: acknowledged changes are gone
and nothing says so. So the SQLite store records, in a small file of its own
(``durable-revision``), the epoch and the last revision it has put on disk, after every
transaction that reaches disk (a ``pwrite`` into the page cache; fsynced at start and at
close). At start the store reads what SQLite recovers, without writing anything, and
refuses to start if that is older than the record (docs/durable-state.md).

The record is never ahead of the data: it is written after SQLite's fsync of the WAL. On
power loss it may lag behind (it is not fsynced per transaction), which can only hide a
loss that happened in the same power cut, never report one that did not.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from statehub.errors import DataFileError
from statehub.store.datafile import file_error

#: The record's file name, in the data directory.
RECORD_FILE = "durable-revision"
_MAGIC = "statehub durable revision 1"
_RECORD_BYTES = 128  # fixed, so every update overwrites the whole record in one pwrite


@dataclass(frozen=True, slots=True)
class Recorded:
    """An epoch and a revision: what the record holds, or what a data file holds."""

    epoch: int
    revision: int


def read_record(path: Path) -> Recorded | None:
    """The record at ``path``; None if there is none (a new or pre-record data directory).

    ``DataFileError`` naming the file if it cannot be read or is not such a record.
    """
    try:
        text = path.read_bytes().decode("ascii")
    except (FileNotFoundError, NotADirectoryError):  # the data directory's check says more
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise DataFileError(f"cannot read {path}: {error}; statehub changed nothing") from None
    lines = text.rstrip(" \n").split("\n")
    try:
        if lines[0] != _MAGIC or len(lines) != 3:
            raise ValueError("not a statehub durable-revision record")
        epoch = int(lines[1].removeprefix("epoch "), 16)
        revision = int(lines[2].removeprefix("revision "))
    except (ValueError, IndexError) as error:
        raise DataFileError(
            f"{path} is damaged ({error}), so statehub cannot tell whether changes "
            "acknowledged as durable are missing; statehub changed nothing. Restore it, or "
            "start with --accept-data-loss (docs/durable-state.md)."
        ) from None
    return Recorded(epoch, revision)


def probe_data_file(path: Path) -> Recorded | None:
    """The epoch and revision SQLite recovers from ``path`` and its WAL, read-only.

    None if the file does not exist or holds no statehub ``meta`` table (a WAL that held
    the whole schema is gone). The probe leaves no trace: SQLite may create ``-wal`` and
    ``-shm`` files to read, and those it created are removed again.
    """
    if not path.exists():
        return None
    companions = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    created = [companion for companion in companions if not companion.exists()]
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0)
        try:
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return None
            raise file_error(path, error) from error
        except sqlite3.Error as error:
            raise file_error(path, error) from error
        finally:
            conn.close()
    finally:
        for companion in created:
            with contextlib.suppress(OSError):  # a read-only directory: nothing was created
                companion.unlink(missing_ok=True)
    return Recorded(int(meta.get("epoch", 0)), int(meta.get("revision", 0)))


def loss(recorded: Recorded, found: Recorded | None, path: Path, record: Path) -> str | None:
    """Why ``found`` (the data file) lacks changes ``recorded`` says were durable, or None."""
    wal = path.with_name(path.name + "-wal")
    if found is None:
        what = f"{path} is missing or holds no statehub tables"
    elif found.epoch != recorded.epoch:
        what = f"{path} holds another history (epoch {found.epoch:016x}, not {recorded.epoch:016x})"
    elif found.revision < recorded.revision:
        what = (
            f"{path} holds revision {found.revision}: changes {found.revision + 1} to "
            f"{recorded.revision} are missing"
        )
    else:
        return None
    return (
        f"{what}, but revision {recorded.revision} was acknowledged as durable (recorded in "
        f"{record}). The write-ahead log {wal} is missing, damaged or truncated, or the data "
        "file was replaced. statehub changed nothing. Restore the files from a backup, or "
        "start with --accept-data-loss (SQLiteStore(accept_data_loss=True)) to go on "
        "without those changes (docs/durable-state.md)."
    )


class DurableRecord:
    """Keeps the record up to date: ``write`` after each transaction, ``sync`` now and then."""

    def __init__(self, path: Path) -> None:
        self.path = path
        created = not path.exists()
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if created:  # the file's name must outlive a power cut too
                directory = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        except OSError as error:
            raise DataFileError(f"cannot write {path}: {error}") from None

    def write(self, epoch: int, revision: int) -> None:
        record = f"{_MAGIC}\nepoch {epoch:016x}\nrevision {revision}\n"
        os.pwrite(self._fd, record.ljust(_RECORD_BYTES).encode("ascii"), 0)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
