"""The book of NanoVer gRPC leases: what a sweep of this server marks lost, and until when.

End to end (a server paused past the sweep, a NanoVer gRPC client refused its lost lease):
tests/test_redis_zombie.py.
"""

from __future__ import annotations

import math
from typing import Any

from statehub.server.nanover_leases import NanoverLeaseBook


def test_a_sweep_marks_every_lease_held_lost_for_its_owner(clock: Any) -> None:
    book = NanoverLeaseBook(clock)
    book.changed("alice", {"a": 60.0, "b": math.inf}, [])
    book.changed("bob", {"c": 60.0}, [])
    assert book.lost_keys("alice", ["a", "b", "c"]) == []
    book.swept(locks={})
    assert book.lost_keys("alice", ["c", "b", "a", "x"]) == ["a", "b"]
    assert book.lost_keys("bob", ["a", "c"]) == ["c"]
    assert book.lost_keys("carol", ["a", "c"]) == []


def test_leasing_again_or_releasing_ends_the_loss(clock: Any) -> None:
    book = NanoverLeaseBook(clock)
    book.changed("alice", {"a": 60.0, "b": 60.0, "c": 60.0}, [])
    book.swept(locks={})
    book.changed("alice", {"a": 60.0}, ["b"])
    assert book.lost_keys("alice", ["a", "b", "c"]) == ["c"]
    book.swept(locks={})  # a second sweep: the lease taken again is lost again
    assert book.lost_keys("alice", ["a", "b", "c"]) == ["a", "c"]


def test_a_lease_released_or_expired_before_the_sweep_is_not_lost(clock: Any) -> None:
    book = NanoverLeaseBook(clock)
    book.changed("alice", {"short": 1.0, "long": 60.0, "gone": 60.0}, [])
    book.changed("alice", {}, ["gone"])
    clock.advance(2.0)
    book.swept(locks={})
    assert book.lost_keys("alice", ["short", "long", "gone"]) == ["long"]


def test_owners_whose_leases_expired_are_forgotten_as_the_book_grows(clock: Any) -> None:
    book = NanoverLeaseBook(clock)
    for owner in range(1023):
        book.changed(f"owner-{owner}", {"k": 1.0}, [])
    clock.advance(2.0)
    book.changed("last", {"k": 60.0}, [])  # the 1024th owner: expired ones are dropped
    assert list(book._held) == ["last"]
