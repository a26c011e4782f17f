"""SQLiteStore behind a StateDictionary: persistence, group commit, restart, bad files."""

from __future__ import annotations

import asyncio
import math
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statehub.core.change import DictionaryChange
from statehub.errors import DataFileError, DurabilityError, ResourceLockedError
from statehub.store.encoding import TAGGED, decode_value, encode_value
from statehub.store.memory import MemoryStore
from statehub.store.sqlite import APPLICATION_ID, DATA_FILE, SCHEMA_VERSION, SQLiteStore
from statehub.store.state_dictionary import StateDictionary
from support.clock import FakeClock


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def stores() -> Iterator[list[SQLiteStore]]:
    """Stores a test opened, closed at the end even if the test failed."""
    opened: list[SQLiteStore] = []
    yield opened
    for store in opened:
        store.close()


def open_state(
    data_dir: Path, stores: list[SQLiteStore], **options: object
) -> tuple[SQLiteStore, StateDictionary]:
    store = SQLiteStore(data_dir, **options)  # type: ignore[arg-type]
    stores.append(store)
    return store, StateDictionary(store=store)


def update(state: StateDictionary, token: object = "writer", **values: object) -> int:
    revision = state.update_state(token, DictionaryChange(values))
    state.wait_durable(revision, timeout=10)
    return revision


def same(a: object, b: object) -> bool:
    """Equal with exact types, NaN equal to NaN, -0.0 different from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and str(a) == str(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


TRICKY_VALUES: dict[str, object] = {
    "int": 1,
    "float_integral": 1.0,
    "bool": True,
    "zero_int": 0,
    "false": False,
    "none": None,
    "nan": math.nan,
    "inf": math.inf,
    "minus_inf": -math.inf,
    "minus_zero": -0.0,
    "tiny": 5e-324,
    "huge_float": 1.7976931348623157e308,
    "third": 1 / 3,
    "big_int": 2**200,
    "negative_big_int": -(10**40),
    "largest_int": 2**1023 - 1,  # the largest the limits allow (docs/limits.md)
    "string": 'héllo \u2603 \U0001f600 \x00 \n "quoted"',
    "empty_list": [],
    "empty_dict": {},
    "nested": {"b": [1, 1.0, "1", [True, None, {"deep": [-(2**70), math.nan]}]], "a": {}},
    "\U0001f600 key beyond the BMP": 3,
    "": "empty key",
    "bytes": b"\x00\xff packed",
    "bytes_nested": {"colours": [b"\x01\x02", b""], "n": 1},
}


def test_values_and_revision_come_back_exactly(data_dir: Path, stores: list[SQLiteStore]) -> None:
    _, state = open_state(data_dir, stores)
    update(state, **TRICKY_VALUES)
    update(state, int=2)
    revision = state.update_state("writer", DictionaryChange(removals=["none"]))
    stores.pop().close()

    reopened, restored = open_state(data_dir, stores)
    assert restored.revision == revision == 3
    assert reopened.skipped_revisions == 0
    content = restored.copy_content()
    expected = {**TRICKY_VALUES, "int": 2}
    del expected["none"]
    assert set(content) == set(expected)
    for key, value in expected.items():
        assert same(content[key], value), key
    assert list(content["nested"]) == ["b", "a"]  # type: ignore[arg-type]


def test_ints_too_long_for_decimal_text_use_the_tagged_form() -> None:
    assert encode_value(7**6000)[1] == TAGGED  # over sys.get_int_max_str_digits() digits
    for value in ([7**6000, {"a": -(7**6000)}, 1.5, True, None, "s"], 1):
        assert same(decode_value(*encode_value(value)), value)


def test_bytes_use_the_tagged_form_and_come_back_as_bytes() -> None:
    assert encode_value(b"\x00")[1] == TAGGED  # JSON has no bytes
    for value in (b"\x00\xff", [b"", {"a": b"x"}, "s"], {"bytes": b"\x01", "int": 7**6000}):
        assert same(decode_value(*encode_value(value)), value)


def test_concurrent_writers_share_commits_and_all_survive(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    _, state = open_state(data_dir, stores)
    writers, per_writer = 16, 100
    acknowledged: list[list[int]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for n in range(per_writer):
                revision = state.update_state(index, DictionaryChange({f"w{index}": n}))
                state.wait_durable(revision, timeout=10)
                assert state.is_durable(revision)
                acknowledged[index].append(revision)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    revisions = sorted(r for acks in acknowledged for r in acks)
    assert revisions == list(range(1, writers * per_writer + 1))
    stores.pop().close()

    _, restored = open_state(data_dir, stores)
    assert restored.revision == writers * per_writer
    assert restored.copy_content() == {f"w{i}": per_writer - 1 for i in range(writers)}


async def test_async_waiters_are_released_by_the_writer(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    store, state = open_state(data_dir, stores)

    async def write(index: int) -> int:
        revision = state.update_state(index, DictionaryChange({f"k{index}": index}))
        await state.wait_durable_async(revision)
        assert store.durable_revision >= revision
        return revision

    revisions = await asyncio.wait_for(asyncio.gather(*(write(i) for i in range(50))), 10)
    assert sorted(revisions) == list(range(1, 51))
    await state.wait_durable_async(0)  # already durable: returns at once


def test_waiting_for_a_revision_never_committed_is_an_error(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    _, state = open_state(data_dir, stores)
    with pytest.raises(ValueError, match="revision 5 has not been committed"):
        state.wait_durable(5)


def test_memory_store_is_durable_at_once() -> None:
    state = StateDictionary(store=MemoryStore())
    revision = state.update_state("a", DictionaryChange({"k": 1}))
    assert state.is_durable(revision)
    state.wait_durable(revision, timeout=0)
    asyncio.run(state.wait_durable_async(revision))


def test_memory_durability_acknowledges_at_once_and_close_writes_everything(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    store, state = open_state(data_dir, stores, durability="memory")
    for n in range(500):
        revision = state.update_state("w", DictionaryChange({f"k{n % 7}": n}))
        assert state.is_durable(revision)
        state.wait_durable(revision, 0)
    stores.pop().close()
    assert store.durable_revision == 500
    _, restored = open_state(data_dir, stores, durability="memory")
    assert restored.revision == 500
    assert restored.get("k3") == 493


def test_unknown_durability_is_refused(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="durability must be one of disk, memory"):
        SQLiteStore(data_dir, durability="fsync")  # type: ignore[arg-type]


def test_leases_are_not_persisted_and_refused_writes_leave_no_trace(
    data_dir: Path, stores: list[SQLiteStore], clock: FakeClock
) -> None:
    store = SQLiteStore(data_dir)
    stores.append(store)
    state = StateDictionary(store=store, clock=clock)
    update(state, "owner", k=1)
    state.update_locks("owner", acquire={"k": None})
    with pytest.raises(ResourceLockedError):
        state.update_state("intruder", DictionaryChange({"k": 2, "other": 3}))
    assert state.revision == 1
    stores.pop().close()

    reopened = SQLiteStore(data_dir)
    stores.append(reopened)
    restored = StateDictionary(store=reopened, clock=clock)
    assert restored.leases() == []
    assert restored.copy_content() == {"k": 1}
    assert restored.revision == 1
    update(restored, "intruder", k=2)  # nobody holds the lease any more
    assert restored.get("k") == 2


def test_history_after_a_restart_starts_at_the_loaded_revision(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    _, state = open_state(data_dir, stores)
    for n in range(5):
        update(state, **{f"k{n}": n})
    with state.get_change_buffer(since=3) as view:  # in the same process: a delta
        assert not view.starts_with_snapshot
        assert view.flush_changed_blocking(0).updates == {"k3": 3, "k4": 4}
    stores.pop().close()

    _, restored = open_state(data_dir, stores)
    update(restored, k5=5)
    with restored.get_change_buffer(since=5) as view:  # the loaded revision: still a delta
        assert not view.starts_with_snapshot
        assert view.flush_changed_blocking(0) == DictionaryChange({"k5": 5})
    with restored.get_change_buffer(since=3) as view:  # older: a snapshot, not a gap
        assert view.starts_with_snapshot
        assert view.flush_changed_blocking(0).updates == {f"k{n}": n for n in range(6)}


def copy_live_files(data_dir: Path, destination: Path) -> None:
    """What a crash leaves on disk: the files as they are while the store is open."""
    destination.mkdir()
    for path in data_dir.iterdir():
        shutil.copyfile(path, destination / path.name)


def test_after_a_crash_the_revision_moves_past_every_number_possibly_seen(
    data_dir: Path, tmp_path: Path, stores: list[SQLiteStore]
) -> None:
    _, state = open_state(data_dir, stores, max_pending=50)
    for n in range(10):
        update(state, k=n)
    crashed = tmp_path / "crashed"
    copy_live_files(data_dir, crashed)

    recovered, restored = open_state(crashed, stores, max_pending=20)
    assert recovered.loaded_revision == 10
    assert recovered.skipped_revisions == 51
    assert restored.revision == 61
    assert restored.get("k") == 9
    # A reader that saw revision 11 before the crash (lost) cannot get a delta with a hole.
    update(restored, k=100)
    with restored.get_change_buffer(since=11) as view:
        assert view.starts_with_snapshot
    # The skip is on disk; a second crash moves on by the bound of the run that crashed.
    again = tmp_path / "again"
    copy_live_files(crashed, again)
    _, twice = open_state(again, stores)
    assert twice.revision == 62 + 21
    assert twice.get("k") == 100


def test_a_second_store_on_the_same_directory_is_refused(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    open_state(data_dir, stores)
    with pytest.raises(DataFileError, match="in use by another process") as caught:
        SQLiteStore(data_dir)
    assert str(data_dir / DATA_FILE) in str(caught.value)


def test_garbage_file_stops_start_up_and_is_left_alone(data_dir: Path) -> None:
    data_dir.mkdir()
    path = data_dir / DATA_FILE
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    with pytest.raises(DataFileError, match="not an SQLite database") as caught:
        SQLiteStore(data_dir)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in data_dir.iterdir()) == [DATA_FILE]


def test_database_of_another_application_stops_start_up_and_is_left_alone(
    data_dir: Path,
) -> None:
    data_dir.mkdir()
    path = data_dir / DATA_FILE
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT)")
        other.execute("INSERT INTO state VALUES ('theirs', 'keep me')")
    other.close()
    before = path.read_bytes()
    with pytest.raises(DataFileError, match="another application") as caught:
        SQLiteStore(data_dir)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in data_dir.iterdir()) == [DATA_FILE]


def test_statehub_file_of_another_schema_version_is_refused(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    open_state(data_dir, stores)
    stores.pop().close()
    path = data_dir / DATA_FILE
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(DataFileError, match="schema version 99"):
        SQLiteStore(data_dir)
    assert path.read_bytes() == before


def test_damaged_statehub_file_is_refused(data_dir: Path, stores: list[SQLiteStore]) -> None:
    _, state = open_state(data_dir, stores)
    update(state, **{f"key{n}": "x" * 500 for n in range(200)})
    stores.pop().close()
    path = data_dir / DATA_FILE
    damaged = bytearray(path.read_bytes())
    page = 4096
    assert len(damaged) > 4 * page
    damaged[3 * page : 4 * page] = b"\xff" * page  # a page of the state table, overwritten
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataFileError, match=r"damaged|malformed|cannot") as caught:
        SQLiteStore(data_dir)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == bytes(damaged)


def test_data_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(DataFileError, match="data directory"):
        SQLiteStore(not_a_dir)


def test_closed_store_refuses_changes(data_dir: Path, stores: list[SQLiteStore]) -> None:
    store, state = open_state(data_dir, stores)
    store.close()
    with pytest.raises(DurabilityError, match="is closed"):
        state.update_state("w", DictionaryChange({"k": 1}))


async def test_a_failed_write_fails_its_waiters_and_refuses_further_changes(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    store, state = open_state(data_dir, stores)
    update(state, kept=1)
    with store._db_lock:  # a real "disk full": SQLite's own cap on the file's page count
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages}")
    revision = state.update_state("w", DictionaryChange({"big": "x" * 100_000}))
    with pytest.raises(DurabilityError, match="database or disk is full"):
        await state.wait_durable_async(revision)
    with pytest.raises(DurabilityError, match=f"changes after revision {revision - 1}"):
        state.wait_durable(revision)
    with pytest.raises(DurabilityError, match="no further change is accepted"):
        state.update_state("w", DictionaryChange({"more": 1}))
    stores.pop().close()

    reopened, restored = open_state(data_dir, stores)
    assert restored.copy_content() == {"kept": 1}
    assert reopened.skipped_revisions > 0  # not closed cleanly: the lost number is not reused


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_every_json_like_value_survives_encoding(value: object) -> None:
    text, form = encode_value(value)  # type: ignore[arg-type]
    text.encode("ascii")  # storable as TEXT whatever the value holds
    assert same(decode_value(text, form), value)


def test_changes_queued_during_a_write_share_the_next_transaction(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    store, state = open_state(data_dir, stores)
    before = store.transactions
    with store._db_lock:  # the writer is held up as if in a long fsync
        revisions = [state.update_state("w", DictionaryChange({f"k{n}": n})) for n in range(16)]
        assert not state.is_durable(revisions[-1])
    state.wait_durable(revisions[-1], timeout=10)
    # the first change may have been taken alone; the 15 queued behind it go together
    assert store.transactions - before <= 2
    assert all(state.is_durable(revision) for revision in revisions)


def test_a_large_batch_of_updates_and_removals_is_written_whole(
    data_dir: Path, stores: list[SQLiteStore]
) -> None:
    store, state = open_state(data_dir, stores)
    with store._db_lock:  # everything below goes to disk in one or two transactions
        state.update_state("w", DictionaryChange({f"k{n}": n for n in range(12_000)}))
        state.update_state("w", DictionaryChange(removals=[f"k{n}" for n in range(0, 12_000, 2)]))
        state.update_state("w", DictionaryChange({"k0": "back", "k1": "changed"}))
        revision = state.update_state("w", DictionaryChange(removals=["k3"]))
    state.wait_durable(revision, timeout=30)
    expected = state.copy_content()
    assert len(expected) == 6_000 - 1 + 1
    stores.pop().close()

    _, restored = open_state(data_dir, stores)
    assert restored.revision == revision
    assert restored.copy_content() == expected


def test_statehub_file_missing_a_table_is_refused(data_dir: Path) -> None:
    data_dir.mkdir()
    path = data_dir / DATA_FILE
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(DataFileError, match="missing tables: state") as caught:
        SQLiteStore(data_dir)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before


def test_the_epoch_survives_a_restart_and_differs_between_data_files(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a")
    epoch = store.epoch
    store.close()
    again = SQLiteStore(tmp_path / "a")
    other = SQLiteStore(tmp_path / "b")
    try:
        assert again.epoch == epoch
        assert other.epoch != epoch
        assert MemoryStore().epoch != MemoryStore().epoch
    finally:
        again.close()
        other.close()
