"""SQLiteStore: the state in an SQLite file (WAL mode), written to disk in groups.

``commit`` runs in the caller's thread under the state dictionary's lock: it checks
leases and compare-and-set expectations, encodes the change, numbers it and queues it.
One writer thread drains the queue: everything queued while the previous fsync ran goes
into one transaction,
committed with ``synchronous=FULL``, and then every waiter of every revision in it is
released at once. So concurrent writers share fsyncs instead of queueing for one each.

Durability ``"disk"``: ``wait_durable(revision)`` returns once the revision is on disk;
acknowledge a change only then. Durability ``"memory"``: ``wait_durable`` returns at
once; the same writer still puts every change on disk within about one fsync, but a
crash (or power loss) loses the acknowledged changes still queued then (at most
``max_pending`` of them).

With durability ``"disk"`` the state dictionary shows a change to readers only once it
is on disk (``on_durable``), so a write that fails (disk full) is never seen. A record
beside the file (``durable-revision``, see ``durable_record``) lets a start notice that
the WAL lost acknowledged changes and refuse; the WAL is checkpointed every
``CHECKPOINT_EVERY`` revisions and when idle, so little depends on it.

Leases are runtime facts of connected sessions and are not persisted: after a restart
there are none. Revisions assigned but not on disk when the process died may have been
seen by subscribers; so that no revision number ever names two different changes, a
start after a crash moves the revision forward by ``max_pending + 1`` (recorded on disk
before any change is accepted), and a reader resuming from a lost revision gets a
snapshot instead of a delta with a hole in it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import functools
import heapq
import itertools
import logging
import os
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from statehub.core.entries import Expectations, KeyFacts, check_expectations
from statehub.core.expiry import LifetimeOwner
from statehub.core.key_history import HistoryRetention, KeyVersion, owner_name
from statehub.core.values import JsonValue, check_key, checked_copy
from statehub.errors import DataDirectoryError, DataFileError, DurabilityError
from statehub.store.base import Store
from statehub.store.datafile import check_sqlite_file, file_error
from statehub.store.durable_record import (
    RECORD_FILE,
    DurableRecord,
    Recorded,
    loss,
    probe_data_file,
    read_record,
)
from statehub.store.encoding import decode_value, encode_value
from statehub.store.leases import LeasesInProcess, LeaseTable

logger = logging.getLogger(__name__)

Durability = Literal["disk", "memory"]
DURABILITY_MODES: tuple[Durability, ...] = ("disk", "memory")

#: The state file inside the data directory (SQLite adds ``-wal`` while it is open).
DATA_FILE = "state.sqlite3"
#: ``PRAGMA application_id`` of a statehub data file ("STHB").
APPLICATION_ID = 0x53544842
#: ``PRAGMA user_version`` of the layout written by this code (2: per-key facts; a
#: version 1 file is upgraded at start, its keys counted as created at its revision).
SCHEMA_VERSION = 2
#: Revisions that may be numbered but not yet on disk; ``commit`` waits beyond that.
MAX_PENDING = 10_000
#: The WAL is checkpointed into the main file after this many revisions, and after
#: ``CHECKPOINT_IDLE_S`` seconds without writes, so that little ever depends on it.
CHECKPOINT_EVERY = 1_000
CHECKPOINT_IDLE_S = 1.0
#: How soon the writer calls the durability listener again when its lock was busy.
LISTENER_RETRY_S = 0.002

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE state (
    key BLOB PRIMARY KEY,
    value TEXT NOT NULL,
    format INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (name, value) VALUES
    ('revision', 0), ('clean', 1), ('restart_skip', 0), ('epoch', 0);
"""
#: Rows per statement: every sqlite3 call releases and retakes the GIL, and retaking it
#: while the server's event loop is busy can take a switch interval (5 ms), so a batch is
#: written with a few multi-row statements rather than one statement per key.
_ROWS_PER_STATEMENT = 150  # 6 parameters each: under 999, the oldest SQLite's limit
#: Schema version 1 to 2: the per-key facts, unknown before, count from the file's revision.
_UPGRADE_FROM_1 = f"""
BEGIN IMMEDIATE;
ALTER TABLE state ADD COLUMN mod_revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE state ADD COLUMN create_revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE state ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
UPDATE state SET mod_revision = (SELECT value FROM meta WHERE name = 'revision'),
    create_revision = (SELECT value FROM meta WHERE name = 'revision');
PRAGMA user_version={SCHEMA_VERSION};
COMMIT;
"""
_SET_META = "UPDATE meta SET value = ? WHERE name = ?"
#: Rows of values over the limits of docs/limits.md (written by an older statehub), moved
#: out of ``state`` at start so the server can run; kept for an operator to look at.
_QUARANTINE_TABLE = """
CREATE TABLE IF NOT EXISTS quarantine (
    key BLOB NOT NULL,
    value TEXT NOT NULL,
    format INTEGER NOT NULL,
    reason TEXT NOT NULL,
    revision INTEGER NOT NULL
)
"""

#: Deadlines (wall-clock seconds) of keys written with a ttl: absolute, so that they mean
#: the same after a restart. Created when missing (a file of an older statehub gains it;
#: an older statehub ignores it, and its keys then never expire).
_DEADLINES_TABLE = """
CREATE TABLE IF NOT EXISTS deadlines (key BLOB PRIMARY KEY, deadline REAL NOT NULL) WITHOUT ROWID
"""

#: Each key's last versions (``core/key_history.py``), kept when the server keeps history:
#: a removal has a NULL value. ``by`` names who made the change.
_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS history (
    key BLOB NOT NULL,
    revision INTEGER NOT NULL,
    time REAL NOT NULL,
    value TEXT,
    format INTEGER,
    by TEXT,
    PRIMARY KEY (key, revision)
) WITHOUT ROWID
"""
_TRIM_HISTORY = """
DELETE FROM history WHERE key = :key AND revision <= (
    SELECT revision FROM history WHERE key = :key ORDER BY revision DESC LIMIT 1 OFFSET :kept
)
"""

#: (revision, rows (key, text, format), removed keys, deadlines of updated keys or None,
#: (wall-clock time, who) if history is kept, else None)
_EncodedChange = tuple[
    int,
    list[tuple[bytes, str, int]],
    list[bytes],
    dict[bytes, float] | None,
    tuple[float, str | None] | None,
]


@dataclass(slots=True)
class _Row:
    """A key's row as a batch leaves it. ``fresh``: the key was (re)created after a removal
    in the batch, so ``version`` is its version; else the number of updates to add."""

    value: str
    format: int
    mod_revision: int
    create_revision: int
    version: int
    fresh: bool

    def params(self, key: bytes) -> tuple[bytes, str, int, int, int, int]:
        return (key, self.value, self.format, self.mod_revision, self.create_revision, self.version)


_AsyncWaiter = tuple[int, int, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _key_bytes(key: str) -> bytes:
    # surrogatepass: a str key with a lone surrogate is valid state and must survive.
    return key.encode("utf-8", "surrogatepass")


def _key_str(key: bytes) -> str:
    return key.decode("utf-8", "surrogatepass")


class SQLiteStore(LeasesInProcess, Store):
    """Keys, values and the revision counter in ``<directory>/state.sqlite3``.

    Opening checks the file and refuses (``DataFileError``, naming the file, changing
    nothing) if it is unreadable, corrupt, from another application or schema, or in use
    by another process. Call ``close`` when done: it writes what is queued and marks the
    file as cleanly closed, so the next start keeps the revision exactly.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        durability: Durability = "disk",
        max_pending: int = MAX_PENDING,
        accept_data_loss: bool = False,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(
                f"durability must be one of {', '.join(DURABILITY_MODES)}, got {durability!r}"
            )
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending!r}")
        self.directory = Path(directory)
        self.path = self.directory / DATA_FILE
        self.durability: Durability = durability
        self._max_pending = max_pending
        self._leases = LeaseTable()
        #: Rows refused at start for being over the value limits: (key, text, format, why).
        self.quarantined: list[tuple[bytes, str, int, str]] = []
        _writable_directory(self.directory)
        record_path = self.directory / RECORD_FILE
        lost = self._check_record(record_path, accept_data_loss)
        self._conn = _connect(self.directory, self.path)
        try:
            content, facts, revision, skipped = self._start(lost)
            self._record = DurableRecord(record_path)
        except BaseException:
            self._conn.close()
            raise
        self._record.write(self._epoch_number, revision - skipped)
        self._record.sync()
        self._checkpointed = revision
        #: Some key may have a deadline on disk: each batch then clears those of the keys
        #: it writes (else a batch without ttls skips the deadlines table).
        self._deadlines_on_disk = False
        self._history: HistoryRetention | None = None
        self._initial_content: dict[str, JsonValue] | None = content
        self._initial_facts = facts
        #: Revision read from disk, and how far it was moved on after an unclean stop.
        self.loaded_revision = revision - skipped
        self.skipped_revisions = skipped
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here
        self._done = threading.Condition(self._lock)  # durability waiters wait here
        self._db_lock = threading.Lock()
        self._revision = revision  # last revision numbered
        self._durable = revision  # last revision on disk
        self._queue: list[_EncodedChange] = []
        self._async_waiters: list[_AsyncWaiter] = []
        self._waiter_ids = itertools.count()
        self._failure: str | None = None
        #: Transactions (one fsync each) the writer has committed; with concurrent
        #: writers, far fewer than the revisions they hold (group commit).
        self.transactions = 0
        self._closing = False
        self._closed = False
        self._listener: Callable[[], bool] | None = None
        self._listener_behind = False  # it could not act when last told: tell it again
        self._writer = threading.Thread(
            target=self._write_loop, name=f"statehub-sqlite-writer:{self.path}", daemon=True
        )
        self._writer.start()
        _OPEN_STORES.add(self)

    # -- Store interface -------------------------------------------------------------

    @property
    def epoch(self) -> str:
        return self._epoch

    def load(self) -> tuple[int, dict[str, JsonValue], dict[str, KeyFacts]]:
        content = self._initial_content
        if content is not None:
            self._initial_content = None
            facts, self._initial_facts = self._initial_facts, {}
            return self._revision, content, facts
        revision = self.flush()
        with self._db_lock:
            content, facts = self._read_content()
            return revision, content, facts

    def keep_history(self, retention: HistoryRetention) -> None:
        with self._db_lock:
            self._conn.execute(_HISTORY_TABLE)
            self._history = retention

    def load_history(self) -> list[KeyVersion]:
        with self._db_lock:
            rows = self._conn.execute(
                "SELECT key, revision, time, value, format, by FROM history ORDER BY revision"
            ).fetchall()
        versions = []
        for key, revision, when, text, form, by in rows:
            name = bytes(key).decode("utf-8", "surrogatepass")
            value = None if text is None else decode_value(text, form)
            versions.append(KeyVersion(name, revision, when, value, text is None, by))
        return versions

    def load_deadlines(self) -> dict[str, float]:
        with self._db_lock:
            rows = self._conn.execute("SELECT key, deadline FROM deadlines").fetchall()
        if rows:
            self._deadlines_on_disk = True
        return {bytes(key).decode("utf-8", "surrogatepass"): at for key, at in rows}

    def commit(
        self,
        owner: Hashable,
        updates: dict[str, JsonValue],
        removals: set[str],
        now: float,
        expect: Expectations | None = None,
        deadlines: Mapping[str, float] | None = None,
        at: float | None = None,
    ) -> int:
        if owner.__class__ is not LifetimeOwner:
            self._leases.check_writable(owner, [*updates, *removals], now)
        if expect:
            # Under the state's lock: the feed knows every change numbered so far.
            check_expectations(expect, self._feed.mod_revision)
            if not (updates or removals):
                with self._lock:
                    return self._revision
        rows = [(_key_bytes(key), *encode_value(value)) for key, value in updates.items()]
        removed = [_key_bytes(key) for key in removals]
        expiring = {_key_bytes(key): at for key, at in deadlines.items()} if deadlines else None
        with self._lock:
            self._check_usable()
            while self._revision - self._durable >= self._max_pending:
                self._done.wait()
                self._check_usable()
            self._revision += 1
            revision = self._revision
            when = time.time() if at is None else at
            made = None if self._history is None else (when, owner_name(owner))
            self._queue.append((revision, rows, removed, expiring, made))
            if len(self._queue) == 1:
                self._work.notify()
        self._feed.committed(revision, updates, removals)
        return revision

    def is_durable(self, revision: int) -> bool:
        return self.durability != "disk" or revision <= self._durable

    def wait_durable(self, revision: int, timeout: float | None = None) -> None:
        if self.durability == "disk":
            self._wait_written(revision, timeout)

    async def wait_durable_async(self, revision: int) -> None:
        if self.durability != "disk":
            return
        with self._lock:
            if self._written(revision):
                return
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._async_waiters, (revision, next(self._waiter_ids), loop, future))
        await future

    def close(self) -> None:
        """Write what is queued, mark the file cleanly closed and close it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closing = True
            self._work.notify()
        self._writer.join()
        _OPEN_STORES.discard(self)
        with self._db_lock:
            try:
                if self._failure is None:
                    self._conn.execute(_SET_META, (1, "clean"))
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._record.sync()
            except (sqlite3.Error, OSError) as error:
                logger.error("closing %s: %s", self.path, error)
            finally:
                self._conn.close()
                self._record.close()

    # -- beyond the Store interface ----------------------------------------------------

    @property
    def durable_revision(self) -> int:
        """The last revision known to be on disk."""
        with self._lock:
            return self._durable

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every change committed so far is on disk; return its revision."""
        with self._lock:
            revision = self._revision
        self._wait_written(revision, timeout)
        return revision

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.directory)!r}, durability={self.durability!r})"

    # -- internals -----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise DurabilityError(self._failure)
        if self._closing:
            raise DurabilityError(f"{self.path} is closed; no further changes are accepted")

    def _written(self, revision: int) -> bool:
        """True if ``revision`` is on disk; raise if it never will be. Caller holds _lock."""
        if revision <= self._durable:
            return True
        if self._failure is not None:
            raise DurabilityError(self._failure)
        if revision > self._revision:
            raise ValueError(
                f"revision {revision} has not been committed (last is {self._revision})"
            )
        return False

    def _wait_written(self, revision: int, timeout: float | None) -> None:
        with self._lock:
            if not self._done.wait_for(lambda: self._written(revision), timeout):
                raise TimeoutError(
                    f"revision {revision} not on disk in {self.path} within {timeout} s "
                    f"(on disk: {self._durable})"
                )

    def _check_record(self, record_path: Path, accept_data_loss: bool) -> Recorded | None:
        """Refuse to start if changes recorded as durable are missing from the data file
        (``DataFileError``, nothing touched); with ``accept_data_loss``, say so and return
        the record, so that ``_start`` moves past the lost revisions in a new epoch."""
        try:
            recorded = read_record(record_path)
        except DataFileError as error:
            if not accept_data_loss:
                raise
            logger.warning("accepting possible data loss (accept_data_loss): %s", error)
            return None
        if recorded is None:
            return None
        problem = loss(recorded, probe_data_file(self.path), self.path, record_path)
        if problem is None:
            return None
        if not accept_data_loss:
            raise DataFileError(problem)
        logger.warning("accepting data loss (accept_data_loss): %s", problem)
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists():  # kept for whoever looks into it; SQLite will reuse the WAL
            kept = wal.with_name(f"{wal.name}.lost-{time.strftime('%Y%m%dT%H%M%S')}")
            shutil.copy2(wal, kept)
            logger.warning("the write-ahead log as it was is kept as %s", kept)
        return recorded

    def _start(
        self, lost: Recorded | None
    ) -> tuple[dict[str, JsonValue], dict[str, KeyFacts], int, int]:
        """Check or create the file, read it, and record that a run has started.

        ``lost``: changes up to ``lost.revision`` are known to be missing (accepted): the
        revision moves past them, in a new epoch, so that no revision names two changes.
        """
        conn, path = self._conn, self.path
        try:
            # Exclusive: the first write locks the file for as long as it is open, so a
            # second server on the same directory fails at start instead of corrupting it.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        except sqlite3.Error as error:
            raise file_error(path, error) from error
        fresh = check_sqlite_file(
            conn,
            path,
            application_id=APPLICATION_ID,
            schema_version=SCHEMA_VERSION,
            tables=("meta", "state"),
            upgradable=(1,),
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise DataFileError(
                    f"cannot use {path}: SQLite could not switch it to WAL mode (it stays in "
                    f"{mode!r} mode; a read-only or network file system?)"
                )
            conn.execute("PRAGMA synchronous=FULL")
            if fresh:
                conn.executescript(
                    f"BEGIN IMMEDIATE; PRAGMA application_id={APPLICATION_ID}; "
                    f"PRAGMA user_version={SCHEMA_VERSION}; {_SCHEMA} COMMIT;"
                )
            elif conn.execute("PRAGMA user_version").fetchone()[0] == 1:
                logger.info("%s: adding per-key facts (schema version 1 to 2)", path)
                conn.executescript(_UPGRADE_FROM_1)
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            content, facts = self._read_content()
            revision, skipped = meta["revision"], 0
            # Made once per data file: revisions go on across restarts, so history does.
            epoch = meta["epoch"] or secrets.randbits(62)
            if lost is not None:
                epoch = secrets.randbits(62)
                skipped = max(revision, lost.revision) + self._max_pending + 1 - revision
                revision += skipped
            elif not meta["clean"]:
                skipped = meta["restart_skip"]
                logger.warning(
                    "%s was not closed cleanly: revision moves on from %d to %d so that "
                    "revisions possibly seen but lost are never reused",
                    path,
                    revision,
                    revision + skipped,
                )
                revision += skipped
            self._epoch_number = epoch
            self._epoch = f"{epoch:016x}"
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_DEADLINES_TABLE)
            if self.quarantined:
                self._quarantine(revision)
            conn.executemany(
                _SET_META,
                [
                    (revision, "revision"),
                    (0, "clean"),
                    (self._max_pending + 1, "restart_skip"),
                    (epoch, "epoch"),
                ],
            )
            conn.execute("COMMIT")
        except sqlite3.OperationalError as error:
            raise file_error(path, error) from error
        except (sqlite3.DatabaseError, KeyError) as error:
            raise DataFileError(
                f"{path} is damaged ({type(error).__name__}: {error}); statehub changed "
                "nothing in it. Restore it from a backup or move it away."
            ) from error
        logger.info("loaded %d keys at revision %d from %s", len(content), revision, path)
        return content, facts, revision, skipped

    def _read_content(self) -> tuple[dict[str, JsonValue], dict[str, KeyFacts]]:
        """The stored content and facts; rows over the value limits go to ``self.quarantined``."""
        content: dict[str, JsonValue] = {}
        facts: dict[str, KeyFacts] = {}
        self.quarantined = []
        rows = self._conn.execute(
            "SELECT key, value, format, mod_revision, create_revision, version FROM state"
        )
        for key, text, form, mod_revision, create_revision, version in rows:
            try:
                name = bytes(key).decode("utf-8", "surrogatepass")
                value = decode_value(text, form)
            except RecursionError:  # json's own guard: nested beyond any limit
                self.quarantined.append((key, text, form, "nested too deep to decode"))
                continue
            except (ValueError, TypeError, IndexError, UnicodeDecodeError) as error:
                raise DataFileError(
                    f"{self.path}: the stored value of key {key!r} cannot be read "
                    f"({type(error).__name__}: {error}); statehub changed nothing in it."
                ) from error
            try:
                content[check_key(name)] = checked_copy(value, name)
            except (ValueError, TypeError) as error:  # written before the limits existed
                self.quarantined.append((key, text, form, str(error)))
                continue
            facts[name] = (mod_revision, create_revision, version)
        return content, facts

    def _quarantine(self, revision: int) -> None:
        """Move the rows ``_read_content`` refused out of ``state``; caller is in a
        transaction. They stay in the file, in table ``quarantine``, for an operator."""
        conn = self._conn
        conn.execute(_QUARANTINE_TABLE)
        for key, text, form, reason in self.quarantined:
            conn.execute(
                "INSERT INTO quarantine (key, value, format, reason, revision) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, text, form, reason, revision),
            )
            conn.execute("DELETE FROM state WHERE key = ?", (key,))
            logger.warning(
                "%s: key %r quarantined, not served: %s. Its row is kept in table "
                "'quarantine' of the file (docs/limits.md).",
                self.path,
                bytes(key).decode("utf-8", "surrogatepass"),
                reason,
            )

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    if self._listener_behind:
                        timeout: float | None = LISTENER_RETRY_S
                    elif self._durable > self._checkpointed:
                        timeout = CHECKPOINT_IDLE_S
                    else:
                        timeout = None
                    if not self._work.wait(timeout):
                        break  # the listener to call again, or idle: time to checkpoint
                batch, self._queue = self._queue, []
                closing = self._closing
            if not batch:
                if closing:
                    return
                if self._listener_behind:
                    self._tell_listener()
                else:
                    self._checkpoint()
                continue
            try:
                with self._db_lock:
                    self._write(batch)
                    self._record.write(self._epoch_number, batch[-1][0])
            except BaseException as error:
                self._fail(error)
                return
            self._mark_durable(batch[-1][0])
            self._tell_listener()
            if batch[-1][0] - self._checkpointed >= CHECKPOINT_EVERY:
                self._checkpoint()

    def on_durable(self, listener: Callable[[], bool]) -> bool:
        self._listener = listener
        return self.durability == "disk"

    def _tell_listener(self) -> None:
        """Tell the listener (the state dictionary) that more is durable; from the writer."""
        listener = self._listener
        try:
            self._listener_behind = listener is not None and not listener()
        except Exception:  # a bug there must not stop the writer
            logger.exception("the durability listener of %s failed", self.path)
            self._listener_behind = False

    def _checkpoint(self) -> None:
        """Copy the WAL into the main file (and fsync it), so that little depends on the
        WAL; runs in the writer thread, every ``CHECKPOINT_EVERY`` revisions and when idle."""
        durable = self._durable
        try:
            with self._db_lock:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as error:  # the next write reports real trouble
            logger.warning("checkpointing %s failed: %s", self.path, error)
        self._checkpointed = durable

    def _write(self, batch: list[_EncodedChange]) -> None:
        # Each key's last row, and its facts: the rule of core/entries.py, applied to the
        # batch's changes in order; a key not removed in the batch adds its number of
        # updates to the version its row has (``_upsert_statement``).
        latest: dict[bytes, _Row | None] = {}
        expiring: dict[bytes, float | None] = {}
        with_deadlines = self._deadlines_on_disk or any(change[3] for change in batch)
        history = self._history
        for revision, rows, removed, deadlines, _made in batch:
            if with_deadlines:
                for key, _text, _form in rows:
                    expiring[key] = deadlines.get(key) if deadlines else None
                for key in removed:
                    expiring[key] = None
            for key, text, form in rows:
                row = latest.get(key, _ABSENT)
                if row is None or row is _ABSENT:
                    latest[key] = _Row(text, form, revision, revision, 1, row is None)
                else:
                    row.value, row.format, row.mod_revision = text, form, revision
                    row.version += 1
            for key in removed:
                latest[key] = None
        upserts = [row.params(key) for key, row in latest.items() if row and not row.fresh]
        fresh = [row.params(key) for key, row in latest.items() if row and row.fresh]
        deletes = [key for key, row in latest.items() if row is None]
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for params, replace in ((upserts, False), (fresh, True)):
                for start in range(0, len(params), _ROWS_PER_STATEMENT):
                    chunk = params[start : start + _ROWS_PER_STATEMENT]
                    conn.execute(
                        _upsert_statement(len(chunk), replace), [v for row in chunk for v in row]
                    )
            for start in range(0, len(deletes), _ROWS_PER_STATEMENT):
                keys = deletes[start : start + _ROWS_PER_STATEMENT]
                conn.execute(_delete_statement(len(keys)), keys)
            if expiring:
                self._write_deadlines(expiring)
            if history is not None:
                self._write_history(batch, history)
            conn.execute(_SET_META, (batch[-1][0], "revision"))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write_history(self, batch: list[_EncodedChange], retention: HistoryRetention) -> None:
        """Each change of the batch as history rows; each touched key trimmed to
        ``retention.versions`` rows, and rows older than its age dropped."""
        rows: list[tuple[bytes, int, float, str | None, int | None, str | None]] = []
        for revision, updated, removed, _deadlines, made in batch:
            if made is None:
                continue
            when, by = made
            rows.extend((key, revision, when, text, form, by) for key, text, form in updated)
            rows.extend((key, revision, when, None, None, by) for key in removed)
        if retention.prefixes:  # keys under a prefix that keeps no history
            rows = [row for row in rows if retention.versions_for(_key_str(row[0]))]
        if not rows:
            return
        conn = self._conn
        conn.executemany(
            "INSERT OR REPLACE INTO history (key, revision, time, value, format, by) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        touched = {row[0] for row in rows}
        kept = {key: retention.versions_for(_key_str(key)) for key in touched}
        conn.executemany(
            _TRIM_HISTORY, [{"key": key, "kept": count} for key, count in kept.items()]
        )
        if retention.age is not None:  # untouched keys' old rows go when read (and loaded)
            oldest = time.time() - retention.age
            conn.executemany(
                "DELETE FROM history WHERE key = ? AND time < ?",
                [(key, oldest) for key in touched],
            )

    def _write_deadlines(self, expiring: dict[bytes, float | None]) -> None:
        """Each touched key's deadline after the batch (None: it does not expire)."""
        conn = self._conn
        cleared = list(expiring)
        for start in range(0, len(cleared), _ROWS_PER_STATEMENT):
            keys = cleared[start : start + _ROWS_PER_STATEMENT]
            conn.execute(
                f"DELETE FROM deadlines WHERE key IN ({', '.join(['?'] * len(keys))})", keys
            )
        kept = [(key, at) for key, at in expiring.items() if at is not None]
        if kept:
            conn.executemany("INSERT INTO deadlines (key, deadline) VALUES (?, ?)", kept)
            self._deadlines_on_disk = True

    def _mark_durable(self, revision: int) -> None:
        with self._lock:
            self.transactions += 1
            self._durable = revision
            ready = []
            waiters = self._async_waiters
            while waiters and waiters[0][0] <= revision:
                ready.append(heapq.heappop(waiters))
            self._done.notify_all()
        _release(ready, None)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._failure = (
                f"writing to {self.path} failed ({type(error).__name__}: {error}); changes "
                f"after revision {self._durable} may not be on disk, and no further change "
                "is accepted"
            )
            logger.error("%s", self._failure)
            ready, self._async_waiters = self._async_waiters, []
            self._done.notify_all()
        _release(ready, self._failure)


#: A key the batch has not touched yet (its row is whatever the file holds).
_ABSENT = _Row("", 0, 0, 0, 0, False)


@functools.lru_cache(maxsize=256)
def _upsert_statement(rows: int, replace: bool) -> str:
    """Rows (key, value, format, mod, create, version). ``replace``: the key was removed
    earlier in the batch, so the row's facts start again; else an existing row keeps its
    create revision and adds ``version`` (the batch's updates of the key) to its own."""
    facts = (
        "create_revision = excluded.create_revision, version = excluded.version"
        if replace
        else "version = state.version + excluded.version"
    )
    return (
        "INSERT INTO state (key, value, format, mod_revision, create_revision, version) "
        f"VALUES {', '.join(['(?, ?, ?, ?, ?, ?)'] * rows)} "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, format = excluded.format, "
        f"mod_revision = excluded.mod_revision, {facts}"
    )


@functools.lru_cache(maxsize=256)
def _delete_statement(rows: int) -> str:
    return f"DELETE FROM state WHERE key IN ({', '.join(['?'] * rows)})"


def _release(waiters: list[_AsyncWaiter], failure: str | None) -> None:
    """Resolve async waiters from the writer thread: one callback per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, _, loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, futures, failure)


def _resolve(futures: list[asyncio.Future[None]], failure: str | None) -> None:
    for future in futures:
        if future.done():  # cancelled by its waiter
            continue
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(DurabilityError(failure))


def _writable_directory(directory: Path) -> None:
    """Create ``directory`` if missing and make sure files can be made in it, before
    anything is read: a read-only mount (where even root cannot write) or a directory
    without permission would otherwise fail half-way through opening the data file.
    ``DataDirectoryError`` naming the directory and the reason."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".statehub-write-check-", dir=directory)
    except OSError as error:
        raise DataDirectoryError(
            f"cannot use {directory} as the data directory: "
            f"{error.strerror or error} ({_errno_name(error)}); statehub changed nothing in it"
        ) from error
    os.close(descriptor)
    os.unlink(probe)


def _errno_name(error: OSError) -> str:
    return errno.errorcode.get(error.errno or 0, "error")


def _connect(directory: Path, path: Path) -> sqlite3.Connection:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataFileError(f"cannot use {directory} as the data directory: {error}") from error
    if path.exists() and not path.is_file():
        raise DataFileError(f"{path} is not a regular file; statehub changed nothing in it")
    try:
        # timeout=0: a file in use by another process is an error now, not a wait.
        conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise file_error(path, error) from error
    return conn


_OPEN_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    """Stores still open at interpreter exit write what they hold before the writer dies."""
    for store in list(_OPEN_STORES):
        store.close()
