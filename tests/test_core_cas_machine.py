"""Compare-and-set under several writers, against a model: each writer reads entries
(then holds a possibly stale copy), and writes with expectations from what it read."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from statehub import ConflictError, DictionaryChange, StateDictionary
from statehub.store.sqlite import SQLiteStore

WRITERS = st.sampled_from(["w1", "w2", "w3"])
KEYS = st.sampled_from(["a", "b", "c"])
VALUES = st.integers(min_value=0, max_value=5)


class CompareAndSetMachine(RuleBasedStateMachine):
    """The model: content, per-key facts (mod, create, version), one revision counter."""

    def make_state(self) -> StateDictionary:
        return StateDictionary()

    def __init__(self) -> None:
        super().__init__()
        self.state = self.make_state()
        self.content: dict[str, Any] = {}
        self.facts: dict[str, tuple[int, int, int]] = {}
        self.revision = 0
        #: What each writer last read of each key: its mod revision, or None (absent).
        self.seen: dict[str, dict[str, int | None]] = {}
        self.conflicts = 0

    @rule(writer=WRITERS, key=KEYS)
    def read(self, writer: str, key: str) -> None:
        entry = self.state.entry(key)
        self.seen.setdefault(writer, {})[key] = None if entry is None else entry.mod_revision

    @rule(
        writer=WRITERS,
        updates=st.dictionaries(KEYS, VALUES, max_size=3),
        removals=st.sets(KEYS, max_size=2),
        guarded=st.sets(KEYS),
    )
    def write(
        self, writer: str, updates: dict[str, Any], removals: set[str], guarded: set[str]
    ) -> None:
        """A write guarded, on the keys of ``guarded`` it touches and has read, by what
        the writer saw: a blind write on the others."""
        updates = {key: value for key, value in updates.items() if key not in removals}
        seen = self.seen.get(writer, {})
        touched = set(updates) | removals
        expect = {key: seen[key] for key in guarded & touched if key in seen}
        failed = {
            key: self.facts[key][0] if key in self.facts else None
            for key, wanted in expect.items()
            if (self.facts[key][0] if key in self.facts else None) != wanted
        }
        try:
            revision = self.state.update_state(
                writer, DictionaryChange(updates, removals), expect=expect
            )
        except ConflictError as error:
            assert failed and error.current == failed
            self.conflicts += 1
            return
        assert not failed, f"applied although {failed} failed {expect}"
        removals &= self.content.keys()
        if updates or removals:
            self.revision += 1
            for key, value in updates.items():
                old = self.facts.get(key)
                self.facts[key] = (
                    (self.revision, self.revision, 1)
                    if old is None
                    else (self.revision, old[1], old[2] + 1)
                )
                self.content[key] = value
            for key in removals:
                del self.content[key]
                del self.facts[key]
        assert revision == self.revision
        for key in touched:  # a writer knows what it wrote
            seen[key] = self.facts[key][0] if key in self.facts else None

    @invariant()
    def matches_the_model(self) -> None:
        assert self.state.revision == self.revision
        _, values, facts = self.state.shared_entries()
        assert values == self.content
        assert facts == self.facts


class SQLiteCompareAndSetMachine(CompareAndSetMachine):
    """The same over SQLite: its rows must keep the facts the mirror shows (checked at
    teardown by opening the file again)."""

    def make_state(self) -> StateDictionary:
        self.directory = tempfile.TemporaryDirectory()
        self.store = SQLiteStore(Path(self.directory.name), durability="memory")
        return StateDictionary(store=self.store)

    def teardown(self) -> None:
        try:
            self.store.close()
            with SQLiteStore(Path(self.directory.name)) as reopened:
                _, values, facts = StateDictionary(store=reopened).shared_entries()
            assert values == self.content and facts == self.facts
        finally:
            self.directory.cleanup()


CompareAndSetMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
SQLiteCompareAndSetMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None
)
TestCompareAndSet = CompareAndSetMachine.TestCase
TestCompareAndSetOnSQLite = SQLiteCompareAndSetMachine.TestCase
