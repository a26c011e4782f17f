"""StateDictionary against a plain-Python model: updates, removals, leases, time."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from statehub import DictionaryChange, ResourceLockedError, StateDictionary
from support.clock import FakeClock

TOKENS = st.sampled_from(["alice", "bob", None])
KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)
DURATIONS = st.one_of(st.none(), st.floats(min_value=0, max_value=10))


class StateDictionaryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.state = StateDictionary(clock=self.clock)
        self.stack = ExitStack()
        self.view = self.stack.enter_context(self.state.get_change_buffer())
        self.mirror: dict[str, Any] = {}
        self.content: dict[str, Any] = {}
        self.leases: dict[str, tuple[Any, float | None]] = {}
        self.revision = 0

    def teardown(self) -> None:
        self.stack.close()

    def _holder(self, key: str) -> Any:
        held = self.leases.get(key)
        if held is None:
            return None
        deadline = held[1]
        if deadline is not None and deadline <= self.clock.now:
            del self.leases[key]
            return None
        return held

    def _blocked(self, token: Any, keys: set[str]) -> set[str]:
        return {key for key in keys if (held := self._holder(key)) and held[0] != token}

    @rule(
        token=TOKENS,
        updates=st.dictionaries(KEYS, VALUES, max_size=3),
        removals=st.sets(KEYS, max_size=2),
    )
    def update_state(self, token: Any, updates: dict[str, Any], removals: set[str]) -> None:
        updates = {key: value for key, value in updates.items() if key not in removals}
        removals &= self.content.keys()  # removing a key that holds nothing is no change
        blocked = self._blocked(token, set(updates) | removals)
        try:
            revision = self.state.update_state(token, DictionaryChange(updates, removals))
        except ResourceLockedError as error:
            assert blocked and error.keys == blocked
            return
        assert not blocked
        if updates or removals:
            self.revision += 1
            self.content.update(updates)
            for key in removals:
                self.content.pop(key, None)
        assert revision == self.revision

    @rule(
        token=TOKENS,
        acquire=st.dictionaries(KEYS, DURATIONS, max_size=2),
        release=st.sets(KEYS, max_size=2),
    )
    def update_locks(self, token: Any, acquire: dict[str, float | None], release: set[str]) -> None:
        for key in release:
            held = self.leases.get(key)
            if held is not None and held[0] == token:
                del self.leases[key]
        blocked = self._blocked(token, set(acquire))
        try:
            self.state.update_locks(token, acquire=acquire, release=release)
        except ResourceLockedError as error:
            assert blocked and error.keys == blocked
            return
        assert not blocked
        for key, seconds in acquire.items():
            self.leases[key] = (token, None if seconds is None else self.clock.now + seconds)

    @rule(seconds=st.floats(min_value=0, max_value=6))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(token=TOKENS)
    def release_owner(self, token: Any) -> None:
        self.state.release_owner(token)
        self.leases = {key: held for key, held in self.leases.items() if held[0] != token}

    @precondition(lambda self: self.revision > 0)
    @rule()
    def flush_view(self) -> None:
        try:
            change = self.view.flush_changed_blocking(timeout=0)
        except TimeoutError:
            return
        for key in change.removals:
            self.mirror.pop(key, None)
        self.mirror.update(change.updates)
        assert self.mirror == self.content

    @invariant()
    def content_matches(self) -> None:
        assert self.state.copy_content() == self.content
        assert self.state.revision == self.revision

    @invariant()
    def leases_match(self) -> None:
        live = {key for key in list(self.leases) if self._holder(key)}
        assert {lease.key for lease in self.state.leases()} == live


StateDictionaryMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestStateDictionary = StateDictionaryMachine.TestCase
