"""A state machine over a StateDictionary on SQLiteStore: changes, leases, clean restarts
and crashes (the files copied while the store is open), checked against a plain dict."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from statehub.core.change import DictionaryChange
from statehub.core.values import JsonValue
from statehub.errors import ResourceLockedError
from statehub.store.sqlite import SQLiteStore
from statehub.store.state_dictionary import StateDictionary

KEYS = st.sampled_from(["a", "b", "c", "d", "\U0001f600"])
OWNERS = st.sampled_from(["alice", "bob"])
INTS = st.integers(-(2**1023) + 1, 2**1023 - 1)  # within the limits (docs/limits.md)
VALUES = st.recursive(
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)
MAX_PENDING = 5


class DurableState(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="statehub-machine-"))
        self.generation = 0
        self.model: dict[str, JsonValue] = {}
        self.model_revision = 0
        self.leases: dict[str, str] = {}
        self.store, self.state = self._open(self.root / "0")

    def _open(self, directory: Path) -> tuple[SQLiteStore, StateDictionary]:
        store = SQLiteStore(directory, max_pending=MAX_PENDING)
        return store, StateDictionary(store=store)

    @rule(owner=OWNERS, updates=st.dictionaries(KEYS, VALUES, max_size=3), removals=st.sets(KEYS))
    def change(self, owner: str, updates: dict[str, JsonValue], removals: set[str]) -> None:
        updates = {key: value for key, value in updates.items() if key not in removals}
        removals &= self.model.keys()  # removing a key that holds nothing is no change
        keys = set(updates) | removals
        blocked = any(self.leases.get(key, owner) != owner for key in keys)
        try:
            revision = self.state.update_state(owner, DictionaryChange(updates, removals))
        except ResourceLockedError:
            assert blocked
            return
        assert not blocked
        if keys:
            self.model_revision += 1
            assert revision == self.model_revision
        self.model.update(updates)
        for key in removals:
            self.model.pop(key, None)
        self.state.wait_durable(revision, timeout=10)

    @rule(owner=OWNERS, key=KEYS)
    def lease(self, owner: str, key: str) -> None:
        try:
            self.state.update_locks(owner, acquire={key: None})
        except ResourceLockedError:
            assert self.leases[key] != owner
        else:
            self.leases[key] = owner

    @rule()
    def restart(self) -> None:
        self.store.close()
        self.store, self.state = self._open(self.root / str(self.generation))
        assert self.state.revision == self.model_revision
        self.leases.clear()  # leases are not persisted

    @rule()
    def crash(self) -> None:
        """What SIGKILL leaves on disk: the files as they are while the store is open."""
        crashed = self.root / str(self.generation + 1)
        shutil.copytree(self.root / str(self.generation), crashed)
        self.store.close()
        self.generation += 1
        self.store, self.state = self._open(crashed)
        assert self.store.skipped_revisions == MAX_PENDING + 1
        self.model_revision += MAX_PENDING + 1
        self.leases.clear()

    @precondition(lambda self: self.model_revision > 0)
    @rule(back=st.integers(min_value=0, max_value=3))
    def resume(self, back: int) -> None:
        """A reader resuming from a recent revision gets a delta or a snapshot, never less."""
        since = max(0, self.model_revision - back)
        with self.state.get_change_buffer(since=since) as view:
            try:
                first = view.flush_changed_blocking(0)
            except TimeoutError:  # nothing changed since ``since``
                first = DictionaryChange()
            if view.starts_with_snapshot:
                assert first.updates == self.model
            else:
                assert since >= self.model_revision - 3
                assert first.updates == {key: self.model[key] for key in first.updates}
                assert not first.removals & self.model.keys()

    @invariant()
    def content_matches(self) -> None:
        assert self.state.copy_content() == self.model
        assert self.state.revision == self.model_revision

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)


DurableState.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
test_durable_state = DurableState.TestCase
