"""A write-ahead log lost after a crash (garbage, deleted, truncated) must not make statehub
start silently without acknowledged changes: it refuses, naming the files, and touches
nothing; ``accept_data_loss`` (``--accept-data-loss``) goes on. The WAL is checkpointed,
so that little depends on it. Real files: a writer process is killed with SIGKILL."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from statehub import DataFileError, DictionaryChange, SQLiteStore, StateDictionary
from statehub.bench.fleet import SERVE
from statehub.store import sqlite as sqlite_store
from statehub.store.durable_record import RECORD_FILE
from statehub.store.sqlite import DATA_FILE
from support.polling import eventually_sync

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

KEYS = 3_000

#: Writes KEYS keys, each acknowledged as durable, with checkpoints off (as before they
#: existed: everything stays in the WAL), says so, and waits to be killed.
WRITER = f"""
import sys
import statehub.store.sqlite as sqlite_store
sqlite_store.CHECKPOINT_EVERY = 10**9
sqlite_store.CHECKPOINT_IDLE_S = 3600.0
from statehub import DictionaryChange, SQLiteStore, StateDictionary
store = SQLiteStore(sys.argv[1])
state = StateDictionary(store=store)
for i in range({KEYS}):
    state.update_state("w", DictionaryChange({{f"k{{i}}": i}}))
print("durable", store.flush(60), flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory as a SIGKILL left it after KEYS acknowledged writes."""
    data = tmp_path_factory.mktemp("crashed") / "data"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().split() == ["durable", str(KEYS)]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert sorted(os.listdir(data)) == [RECORD_FILE, DATA_FILE, f"{DATA_FILE}-wal"]
    assert main_file_revision(data, data.parent) < KEYS  # the rest is only in the WAL
    return data


def image(crashed: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    data = tmp_path / "data"
    shutil.copytree(crashed, data, ignore=shutil.ignore_patterns("main-only"))
    damage(data / f"{DATA_FILE}-wal")
    return data


def garbage(wal: Path) -> None:
    wal.write_bytes(os.urandom(wal.stat().st_size))


def deleted(wal: Path) -> None:
    wal.unlink()


def truncated(wal: Path) -> None:
    with wal.open("r+b") as file:
        file.truncate(wal.stat().st_size // 2)


def files(data: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in data.iterdir()}


def test_an_intact_crash_image_starts_with_every_acknowledged_change(
    crashed: Path, tmp_path: Path
) -> None:
    data = image(crashed, tmp_path, lambda wal: None)
    with SQLiteStore(data) as store:
        state = StateDictionary(store=store)
        assert len(state.copy_content()) == KEYS
        assert store.loaded_revision == KEYS


@pytest.mark.parametrize("damage", [garbage, deleted, truncated])
def test_a_lost_wal_stops_start_up_naming_the_files_and_touches_nothing(
    crashed: Path, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    data = image(crashed, tmp_path, damage)
    before = files(data)
    with pytest.raises(DataFileError) as refused:
        SQLiteStore(data)
    message = str(refused.value)
    for name in (DATA_FILE, f"{DATA_FILE}-wal", RECORD_FILE):
        assert str(data / name) in message
    assert f"revision {KEYS} was acknowledged as durable" in message
    assert "--accept-data-loss" in message
    if damage is truncated:
        assert "are missing" in message
    assert files(data) == before  # not a byte changed, no file added or removed


def test_accepting_the_loss_starts_past_the_lost_revisions_in_a_new_epoch(
    crashed: Path, tmp_path: Path
) -> None:
    with SQLiteStore(image(crashed, tmp_path / "intact", lambda wal: None)) as intact:
        pass  # the epoch of the history before the loss
    data = image(crashed, tmp_path, truncated)
    with SQLiteStore(data, accept_data_loss=True) as store:
        state = StateDictionary(store=store)
        survivors = len(state.copy_content())
        assert survivors < KEYS  # (how many depends on where the WAL was cut)
        assert state.revision > KEYS  # no revision number will name two changes
        assert store.epoch != intact.epoch
        state.wait_durable(state.update_state("w", DictionaryChange({"after": 1})), 10)
    assert [p.name for p in data.iterdir() if ".lost-" in p.name]  # the damaged WAL, kept
    with SQLiteStore(data) as reopened:  # a clean restart needs no flag
        assert len(StateDictionary(store=reopened).copy_content()) == survivors + 1


def test_serve_refuses_a_lost_wal_and_accepts_it_with_the_flag(
    crashed: Path, tmp_path: Path
) -> None:
    data = image(crashed, tmp_path, garbage)
    refused = subprocess.run(
        [*SERVE, "--port", "0", "--data", str(data)], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert str(data / f"{DATA_FILE}-wal") in refused.stderr
    assert "--accept-data-loss" in refused.stderr
    process = subprocess.Popen(
        [*SERVE, "--port", "0", "--data", str(data), "--accept-data-loss"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "statehub serving on" in process.stdout.readline()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "accepting data loss" in stderr


def main_file_revision(data: Path, tmp_path: Path) -> int:
    """The revision the main data file holds without its WAL (copied: the store is open)."""
    copy = tmp_path / "main-only"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    shutil.copy(data / DATA_FILE, copy / DATA_FILE)
    conn = sqlite3.connect(copy / DATA_FILE)
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
    except sqlite3.OperationalError:  # no meta table: the schema too is only in the WAL
        return 0
    finally:
        conn.close()
    return int(row[0])


def test_the_wal_is_checkpointed_every_so_many_revisions_and_when_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 100)
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_IDLE_S", 0.2)
    data = tmp_path / "data"
    with SQLiteStore(data) as store:
        state = StateDictionary(store=store)
        for n in range(1, 251):
            state.wait_durable(state.update_state("w", DictionaryChange({"n": n})), 10)
            if n == 150:  # the checkpoint after revision 100 ran before 150 was written
                assert main_file_revision(data, tmp_path) >= 100
        eventually_sync(  # the idle checkpoint takes the rest
            lambda: main_file_revision(data, tmp_path) >= 250, "the WAL checkpointed", timeout=30
        )
