"""Keys bound to a session (``ephemeral``), against a model: written by several owners,
unbound by plain writes, removed in one commit when their owner ends; SQLite removes
them at its next start (their sessions did not outlive the process)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from statehub import DictionaryChange, StateDictionary
from statehub.store.sqlite import SQLiteStore
from support.clock import FakeClock

OWNERS = st.sampled_from(["s1", "s2", "s3"])
KEYS = st.sampled_from(["a", "b", "c", "d"])


class EphemeralMachine(RuleBasedStateMachine):
    """The model: content, each bound key's owner, the revision."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.directory = tempfile.TemporaryDirectory()
        self.store = SQLiteStore(Path(self.directory.name), durability="memory")
        self.state = StateDictionary(store=self.store, clock=self.clock, wall_clock=self.clock)
        self.content: dict[str, Any] = {}
        self.owner: dict[str, str] = {}
        self.revision = 0
        self.session_ends: list[set[str]] = []
        self.state.content_updated.add_callback(self._seen)

    def _seen(self, access_token: object, change: DictionaryChange) -> None:
        if repr(access_token) == "SESSION_END":
            self.session_ends.append(set(change.removals))

    @rule(
        owner=OWNERS,
        updates=st.dictionaries(KEYS, st.tuples(st.integers(0, 3), st.booleans()), max_size=3),
        removals=st.sets(KEYS, max_size=1),
    )
    def write(self, owner: str, updates: dict[str, tuple[int, bool]], removals: set[str]) -> None:
        updates = {key: pair for key, pair in updates.items() if key not in removals}
        bound = [key for key, (_, eph) in updates.items() if eph]
        self.state.update_state(
            owner,
            DictionaryChange({key: v for key, (v, _) in updates.items()}, removals),
            ephemeral=bound,
        )
        removals &= self.content.keys()
        if updates or removals:
            self.revision += 1
        for key, (value, eph) in updates.items():
            self.content[key] = value
            self.owner.pop(key, None)
            if eph:
                self.owner[key] = owner
        for key in removals:
            del self.content[key]
            self.owner.pop(key, None)

    @rule(owner=OWNERS)
    def session_ends(self, owner: str) -> None:
        mine = {key for key, holder in self.owner.items() if holder == owner}
        ends_before = len(self.session_ends)
        self.state.release_owner(owner)
        if mine:
            self.revision += 1  # one commit for all of them
            assert self.session_ends[ends_before:] == [mine]
        else:
            assert len(self.session_ends) == ends_before
        for key in mine:
            del self.content[key]
            del self.owner[key]

    @invariant()
    def matches_the_model(self) -> None:
        assert self.state.revision == self.revision
        assert self.state.copy_content() == self.content
        for owner in ("s1", "s2", "s3"):
            mine = {key for key, holder in self.owner.items() if holder == owner}
            assert self.state.bound_keys(owner) == mine

    def teardown(self) -> None:
        """A restart: the bound keys' sessions are gone, so are they; the rest stays."""
        try:
            self.store.close()
            with SQLiteStore(Path(self.directory.name), durability="memory") as reopened:
                again = StateDictionary(store=reopened, clock=self.clock, wall_clock=self.clock)
                removed = 0
                for _ in range(10):  # bounded; a handful of keys is one batch
                    if not (count := again.expire_due()):
                        break
                    removed += count
                assert removed == len(self.owner)
                kept = {k: v for k, v in self.content.items() if k not in self.owner}
                assert again.copy_content() == kept
        finally:
            self.directory.cleanup()


EphemeralMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None
)
TestEphemeral = EphemeralMachine.TestCase


def test_bad_ephemeral_input(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock)
    with pytest.raises(ValueError, match="ephemeral key 'z', which the update does not set"):
        state.update_state("s", DictionaryChange({"a": 1}), ephemeral=["z"])
    with pytest.raises(TypeError, match="write \\[key\\] for one key"):
        state.update_state("s", DictionaryChange({"a": 1}), ephemeral="a")
    assert state.revision == 0


def test_a_lease_of_another_owner_does_not_keep_a_bound_key(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock)
    state.update_state("s1", DictionaryChange({"here.s1": True}), ephemeral=["here.s1"])
    state.update_locks("s2", acquire={"here.s1": None})
    state.release_owner("s1")
    assert state.copy_content() == {}
    assert [lease.owner for lease in state.leases()] == ["s2"]


def test_a_frozen_state_removes_nothing_when_a_session_ends(clock: FakeClock) -> None:
    state = StateDictionary(clock=clock, wall_clock=clock)
    state.update_state("s1", DictionaryChange({"k": 1}), ephemeral=["k"])
    state.freeze()
    state.release_owner("s1")  # a stopping server: no commit, no error
    assert state.copy_content() == {"k": 1}
