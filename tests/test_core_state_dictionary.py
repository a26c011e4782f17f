import math
import threading

import pytest

from statehub import DictionaryChange, ObjectFrozenError, ResourceLockedError, StateDictionary
from support.clock import FakeClock


@pytest.fixture
def state(clock: FakeClock) -> StateDictionary:
    return StateDictionary(clock=clock)


def change(updates: dict[str, object] | None = None, removals: list[str] | None = None):
    return DictionaryChange(updates, removals)


def test_each_commit_gets_the_next_revision(state: StateDictionary) -> None:
    assert state.revision == 0
    assert state.update_state("a", change({"x": 1})) == 1
    assert state.update_state("a", change(removals=["x"])) == 2
    assert state.update_state("a", change()) == 2  # an empty change commits nothing
    assert state.revision == 2


def test_update_is_atomic_when_one_key_is_leased(state: StateDictionary) -> None:
    state.update_state("a", change({"free": 0, "taken": 0}))
    state.update_locks("b", acquire={"taken": 10})
    with pytest.raises(ResourceLockedError, match="'taken'") as raised:
        state.update_state("a", change({"free": 1, "taken": 1}))
    assert raised.value.keys == frozenset({"taken"})
    assert state.copy_content() == {"free": 0, "taken": 0}
    assert state.revision == 1


def test_removal_of_a_leased_key_is_refused(state: StateDictionary) -> None:
    state.update_state("a", change({"k": 1}))
    state.update_locks("b", acquire={"k": None})
    with pytest.raises(ResourceLockedError):
        state.update_state("a", change(removals=["k"]))
    assert state.get("k") == 1


def test_owner_can_write_its_leased_keys(state: StateDictionary) -> None:
    state.update_locks("a", acquire={"k": 5})
    state.update_state("a", change({"k": 1}))
    assert state.get("k") == 1


def test_lease_expires_on_the_clock(state: StateDictionary, clock: FakeClock) -> None:
    state.update_locks("a", acquire={"k": 5})
    clock.advance(4.9)
    with pytest.raises(ResourceLockedError):
        state.update_state("b", change({"k": 1}))
    clock.advance(0.1)
    state.update_state("b", change({"k": 1}))
    assert state.get("k") == 1


def test_lease_without_duration_never_expires(state: StateDictionary, clock: FakeClock) -> None:
    state.update_locks("a", acquire={"k": None})
    clock.advance(1e9)
    with pytest.raises(ResourceLockedError):
        state.update_locks("b", acquire={"k": 1})
    assert [(lease.key, lease.owner, lease.seconds_left) for lease in state.leases()] == [
        ("k", "a", None)
    ]


def test_zero_duration_expires_at_once(state: StateDictionary) -> None:
    state.update_locks("a", acquire={"k": 0})
    state.update_state("b", change({"k": 1}))
    assert state.leases() == []


def test_relocking_resets_the_deadline(state: StateDictionary, clock: FakeClock) -> None:
    state.update_locks("a", acquire={"k": 5})
    clock.advance(4)
    state.update_locks("a", acquire={"k": 5})
    clock.advance(4)
    with pytest.raises(ResourceLockedError):
        state.update_state("b", change({"k": 1}))
    (lease,) = state.leases()
    assert lease.seconds_left == pytest.approx(1)


def test_acquire_is_all_or_nothing(state: StateDictionary) -> None:
    state.update_locks("b", acquire={"y": 10})
    with pytest.raises(ResourceLockedError, match="'y'"):
        state.update_locks("a", acquire={"x": 10, "y": 10})
    assert [lease.key for lease in state.leases()] == ["y"]


def test_releases_happen_even_when_the_acquire_fails(state: StateDictionary) -> None:
    state.update_locks("a", acquire={"mine": 10})
    state.update_locks("b", acquire={"theirs": 10})
    with pytest.raises(ResourceLockedError):
        state.update_locks("a", acquire={"theirs": 10}, release=["mine"])
    state.update_state("b", change({"mine": 1}))  # released despite the refusal
    assert [lease.key for lease in state.leases()] == ["theirs"]


def test_releasing_someone_elses_or_a_free_key_is_a_no_op(state: StateDictionary) -> None:
    state.update_locks("b", acquire={"k": 10})
    state.update_locks("a", release=["k", "never-locked"])
    assert [lease.owner for lease in state.leases()] == ["b"]


def test_locking_a_missing_key_does_not_create_it(state: StateDictionary) -> None:
    state.update_locks("a", acquire={"ghost": 10})
    assert state.copy_content() == {}


def test_removing_a_key_keeps_its_lease(state: StateDictionary) -> None:
    state.update_locks("a", acquire={"k": 10})
    state.update_state("a", change({"k": 1}))
    state.update_state("a", change(removals=["k"]))
    with pytest.raises(ResourceLockedError):
        state.update_state("b", change({"k": 2}))


def test_none_token_is_an_identity_of_its_own(state: StateDictionary) -> None:
    state.update_locks(None, acquire={"k": 10})
    state.update_state(None, change({"k": 1}))
    with pytest.raises(ResourceLockedError):
        state.update_state("someone", change({"k": 2}))


@pytest.mark.parametrize("bad", [-1, math.nan, "5", True, [1]])
def test_bad_lease_durations_are_refused_and_nothing_changes(
    state: StateDictionary, bad: object
) -> None:
    with pytest.raises(ValueError, match="lease on 'b': duration"):
        state.update_locks("a", acquire={"a": 1, "b": bad})  # type: ignore[dict-item]
    assert state.leases() == []


def test_unhashable_token_is_refused(state: StateDictionary) -> None:
    with pytest.raises(TypeError, match="access token must be hashable"):
        state.update_state({"not": "hashable"}, change({"k": 1}))


def test_release_owner_and_clear_locks(state: StateDictionary) -> None:
    state.update_locks("a", acquire={"a1": None, "a2": None})
    state.update_locks("b", acquire={"b1": None})
    state.release_owner("a")
    assert [lease.key for lease in state.leases()] == ["b1"]
    state.clear_locks()
    assert state.leases() == []


def test_content_updated_fires_with_token_and_change(state: StateDictionary) -> None:
    seen: list[tuple[object, DictionaryChange]] = []
    state.content_updated.add_callback(
        lambda access_token, change: seen.append((access_token, change))
    )
    state.update_state("a", change({"y": 0}))
    state.update_state("a", change({"x": 1}, ["y", "never-set"]))
    assert seen[1:] == [("a", DictionaryChange({"x": 1}, {"y"}))]


def test_frozen_state_refuses_changes(state: StateDictionary) -> None:
    state.update_state("a", change({"x": 1}))
    with state.get_change_buffer() as view:
        state.freeze()
        with pytest.raises(ObjectFrozenError):
            state.update_state("a", change({"x": 2}))
        assert view.flush_changed_blocking() == DictionaryChange({"x": 1})


def test_lock_content_holds_off_writers(state: StateDictionary) -> None:
    state.update_state("a", change({"x": 1}))
    writer_done = threading.Event()

    def write() -> None:
        state.update_state("b", change({"x": 2}))
        writer_done.set()

    with state.lock_content() as content:
        writer = threading.Thread(target=write)
        writer.start()
        assert not writer_done.wait(0.05)
        assert content == {"x": 1}
    writer.join(timeout=5)
    assert state.get("x") == 2


def test_change_buffer_since_a_revision(state: StateDictionary) -> None:
    state.update_state("a", change({"x": 1, "y": 1}))
    seen = state.revision
    state.update_state("a", change({"x": 2}))
    with state.get_change_buffer(since=seen) as view:
        assert view.flush_changed_blocking() == DictionaryChange({"x": 2})
