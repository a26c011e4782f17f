"""The history checker finds each kind of violation it is meant to find (and none in a
consistent history): without these, a run that reports nothing proves nothing."""

from __future__ import annotations

from support.history_checker import (
    FAILED,
    OK,
    UNKNOWN,
    Batch,
    History,
    Hold,
    Operation,
    check,
)


def write(client: str, key: str, value: object, start: float, end: float, rev: int) -> Operation:
    return Operation(client, "write", key, value, start, end, OK, rev, "e1")


def read(
    client: str, key: str, value: object, start: float, end: float, rev: int, server: str = ""
) -> Operation:
    return Operation(client, "read", key, value, start, end, OK, rev, "e1", server)


def batch(revision: int, updates: dict[str, object], *, snapshot: bool = False) -> Batch:
    return Batch("w", revision, snapshot, updates, [], "e1", 0.0)


def consistent() -> History:
    return History(
        operations=[
            write("a", "k", "a1", 0.0, 1.0, 1),
            write("b", "k", "b1", 0.5, 2.0, 2),  # concurrent with a1: either order is fine
            read("c", "k", "b1", 2.5, 3.0, 2),
            Operation("a", "write", "k", "a2", 3.5, 9.0, UNKNOWN, None, "e1"),
            read("c", "k", "a2", 4.0, 4.5, 3),  # the unknown write happened
            Operation("b", "write", "k", "b2", 5.0, 5.5, FAILED, None, "e1"),
        ],
        batches=[batch(1, {"k": "a1"}, snapshot=True), batch(3, {"k": "a2"})],
        leases=[Hold("a", "k", 10.0, 12.0)],
        locks=[Hold("a", "door", 0.0, 1.0, fence=1), Hold("b", "door", 1.0, 2.0, fence=2)],
    )


def test_a_consistent_history_passes() -> None:
    assert check(consistent()) == []


def test_a_stale_read_is_found() -> None:
    history = consistent()
    history.operations.append(read("d", "k", "a1", 3.1, 3.2, 1))  # b1 was done at 2.0
    (problem,) = check(history)
    assert "not linearizable" in problem and "'a1'" in problem


def test_a_read_may_trail_another_servers_writes_but_not_its_own_servers() -> None:
    history = consistent()
    for op in history.operations:
        op.server = "A"
    history.operations.append(write("d", "k", "d1", 6.0, 6.1, 4))
    history.operations[-1].server = "B"
    history.operations.append(read("e", "k", "a2", 6.2, 6.3, 3, server="A"))  # B's copy leads
    assert check(history) == []
    history.operations.append(read("e", "k", "a2", 6.2, 6.3, 3, server="B"))
    (problem,) = check(history)
    assert "not linearizable" in problem and "by e" in problem


def test_writes_ordered_against_real_time_are_found() -> None:
    history = consistent()
    history.operations.append(write("d", "k", "d1", 2.1, 2.2, 1))  # after b1, lower revision
    problems = check(history)
    assert any("not linearizable" in problem for problem in problems)


def test_a_read_of_a_value_nobody_wrote_or_of_a_refused_write_is_found() -> None:
    history = consistent()
    history.operations += [read("d", "k", "ghost", 6.0, 6.1, 3), read("d", "k", "b2", 6.0, 6.1, 3)]
    problems = check(history)
    assert any("nobody wrote" in problem for problem in problems)
    assert any("refused" in problem for problem in problems)


def test_a_gap_in_a_watch_is_found() -> None:
    history = consistent()
    history.operations.append(write("d", "other", "d1", 6.1, 6.2, 4))
    history.batches.append(batch(5, {"k": "x"}))  # (3, 5] misses 'other' at 4
    history.operations.append(write("d", "k", "x", 6.3, 6.4, 5))
    (problem,) = check(history)
    assert "a gap" in problem and "'other'" in problem


def test_a_watch_going_back_or_a_stale_snapshot_is_found() -> None:
    history = consistent()
    history.batches += [batch(2, {"k": "b1"}), batch(2, {"k": "a1"}, snapshot=True)]
    problems = check(history)
    assert any("revision 2 after 3" in problem for problem in problems)
    assert any("older than" in problem for problem in problems)


def test_a_write_inside_another_clients_lease_is_found_unless_the_holder_was_told() -> None:
    history = consistent()
    history.operations.append(write("b", "k", "b3", 10.5, 11.0, 6))
    (problem,) = check(history)
    assert "intrusion" in problem
    history.leases[0].lost_at = 10.2  # swept, and told: the write was after that
    assert check(history) == []


def test_overlapping_lock_holds_are_found_unless_the_first_was_told_and_fenced() -> None:
    history = consistent()
    history.locks.append(Hold("c", "door", 1.5, 3.0, fence=3))  # overlaps b's hold
    (problem,) = check(history)
    assert "held it at once" in problem
    history.locks[1].lost_at = 1.4
    assert check(history) == []
    history.locks[2].fence = 2  # the later holder's fence does not grow
    (problem,) = check(history)
    assert "fences must grow" in problem
