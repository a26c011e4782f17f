"""Keys that expire (``ttl=``), against a model, with a fake wall clock: memory, and
SQLite reopened at teardown (deadlines are absolute and survive a restart)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from statehub import DictionaryChange, ResourceLockedError, StateDictionary
from statehub.store.sqlite import SQLiteStore
from support.clock import FakeClock

KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.integers(min_value=0, max_value=5)
TTLS = st.none() | st.sampled_from([0.5, 1.0, 2.0, 3.5])


class ExpiryMachine(RuleBasedStateMachine):
    """The model: content, each key's deadline, and the revision (expiry commits too)."""

    def make_state(self, clock: FakeClock) -> StateDictionary:
        return StateDictionary(clock=clock, wall_clock=clock)

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.state = self.make_state(self.clock)
        self.content: dict[str, Any] = {}
        self.deadline: dict[str, float] = {}
        self.revision = 0
        self.removed_by_expiry: list[set[str]] = []
        self.state.content_updated.add_callback(self._seen)

    def _seen(self, access_token: object, change: DictionaryChange) -> None:
        if repr(access_token) == "EXPIRY":
            self.removed_by_expiry.append(set(change.removals))

    @rule(
        updates=st.dictionaries(KEYS, st.tuples(VALUES, TTLS), max_size=3),
        removals=st.sets(KEYS, max_size=2),
    )
    def write(self, updates: dict[str, tuple[int, float | None]], removals: set[str]) -> None:
        updates = {key: pair for key, pair in updates.items() if key not in removals}
        ttl = {key: t for key, (_, t) in updates.items() if t is not None}
        self.state.update_state(
            "w", DictionaryChange({k: v for k, (v, _) in updates.items()}, removals), ttl=ttl
        )
        removals &= self.content.keys()
        if updates or removals:
            self.revision += 1
        for key, (value, seconds) in updates.items():
            self.content[key] = value
            self.deadline.pop(key, None)
            if seconds is not None:
                self.deadline[key] = self.clock.now + seconds
        for key in removals:
            del self.content[key]
            self.deadline.pop(key, None)

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0]), batch=st.integers(1, 3))
    def time_passes(self, seconds: float, batch: int) -> None:
        self.clock.advance(seconds)
        due = {key for key, at in self.deadline.items() if at <= self.clock.now}
        expired: set[str] = set()
        for _ in range(10):  # bounded: at most 4 keys, at least 1 per call
            removed_before = len(self.removed_by_expiry)
            count = self.state.expire_due(limit=batch)
            if count == 0:
                break
            assert count <= batch
            assert len(self.removed_by_expiry) == removed_before + 1
            expired |= self.removed_by_expiry[-1]
            self.revision += 1  # each batch is one commit with its own revision
        assert expired == due
        for key in due:
            del self.content[key]
            del self.deadline[key]

    @rule(key=KEYS)
    def entry_shows_time_left(self, key: str) -> None:
        entry = self.state.entry(key)
        if key not in self.content:
            assert entry is None
            return
        assert entry is not None
        if key in self.deadline:
            assert entry.expires_in == pytest.approx(max(0.0, self.deadline[key] - self.clock.now))
        else:
            assert entry.expires_in is None

    @invariant()
    def matches_the_model(self) -> None:
        assert self.state.revision == self.revision
        assert self.state.copy_content() == self.content
        expected_next = min(self.deadline.values(), default=None)
        left = self.state.next_expiry()
        if expected_next is None:
            assert left is None
        else:
            assert left == pytest.approx(max(0.0, expected_next - self.clock.now))


class SQLiteExpiryMachine(ExpiryMachine):
    """The same over SQLite; at teardown the file, reopened, has the same content and
    the same deadlines."""

    def make_state(self, clock: FakeClock) -> StateDictionary:
        self.directory = tempfile.TemporaryDirectory()
        self.store = SQLiteStore(Path(self.directory.name), durability="memory")
        return StateDictionary(store=self.store, clock=clock, wall_clock=clock)

    def teardown(self) -> None:
        try:
            self.store.close()
            with SQLiteStore(Path(self.directory.name)) as reopened:
                again = StateDictionary(store=reopened, clock=self.clock, wall_clock=self.clock)
                assert again.copy_content() == self.content
                for key in self.content:
                    left = again.expires_in(key)
                    if key in self.deadline:
                        assert left == pytest.approx(self.deadline[key] - self.clock.now)
                    else:
                        assert left is None
        finally:
            self.directory.cleanup()


ExpiryMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
SQLiteExpiryMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None
)
TestExpiry = ExpiryMachine.TestCase
TestExpiryOnSQLite = SQLiteExpiryMachine.TestCase


@pytest.mark.parametrize("bad", [0, -1, -0.5, math.nan, math.inf])
def test_a_bad_ttl_names_the_key_and_applies_nothing(clock: FakeClock, bad: float) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock)
    with pytest.raises(ValueError, match="ttl of key 'b'"):
        state.update_state("w", DictionaryChange({"a": 1, "b": 2}), ttl={"a": 1, "b": bad})
    assert state.copy_content() == {} and state.revision == 0


def test_a_ttl_on_a_key_the_update_does_not_set_is_refused(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock)
    with pytest.raises(ValueError, match="'z', which the update does not set"):
        state.update_state("w", DictionaryChange({"a": 1}), ttl={"z": 5})
    with pytest.raises(TypeError, match="ttl of key 'a' must be a number"):
        state.update_state("w", DictionaryChange({"a": 1}), ttl={"a": "5"})  # type: ignore[dict-item]
    assert state.revision == 0


def test_expiry_is_a_removal_with_its_own_revision_seen_by_subscribers(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock)
    with state.get_change_buffer() as view:
        state.update_state("w", DictionaryChange({"a": 1, "b": 2}), ttl={"a": 5})
        assert view.flush_changed_blocking(timeout=0).updates == {"a": 1, "b": 2}
        clock.advance(4.9)
        assert state.expire_due() == 0
        clock.advance(0.1)
        assert state.expire_due() == 1
        assert state.revision == 2
        change = view.flush_changed_blocking(timeout=0)
        assert change.removals == {"a"} and not change.updates
    assert state.copy_content() == {"b": 2}


def test_a_lease_does_not_stop_expiry_and_a_write_without_ttl_clears_it(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock)
    state.update_state("alice", DictionaryChange({"a": 1, "b": 1}), ttl={"a": 1, "b": 1})
    state.update_locks("alice", acquire={"a": None})
    with pytest.raises(ResourceLockedError):
        state.update_state("bob", DictionaryChange({"a": 2}))
    state.update_state("bob", DictionaryChange({"b": 2}))  # no ttl: b stays
    clock.advance(1)
    assert state.expire_due() == 1
    assert state.copy_content() == {"b": 2}


def test_many_keys_expire_in_bounded_batches(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock)
    keys = {f"k{i}": i for i in range(2500)}
    state.update_state("w", DictionaryChange(keys), ttl=dict.fromkeys(keys, 1.0))
    clock.advance(1)
    counts = [state.expire_due(limit=1000) for _ in range(4)]
    assert counts == [1000, 1000, 500, 0]
    assert state.copy_content() == {} and state.revision == 4
