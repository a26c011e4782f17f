"""Per-key facts and compare-and-set expectations.

Each key that holds a value has three facts, as etcd's ``KeyValue``: the revision of its
last change (``mod_revision``), the revision that created it (``create_revision``) and
how many changes it has had since (``version``, 1 when created). Removing a key forgets
them: re-created, it starts again at version 1 with a new create revision.

They follow from the sequence of committed changes alone (an update of a present key
bumps the version, of an absent key creates it), so every copy of the state (a server's
mirror, SQLite's rows, Redis's hash) computes the same facts from the same changes.

An update may carry expectations: per key it touches, the ``mod_revision`` it must still
have, or None for "must not exist". The store checks them in its atomic step, with the
leases, and refuses the whole update with ``ConflictError`` if any fails.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from statehub.core.values import JsonValue, check_key
from statehub.errors import ConflictError

#: A present key's facts: (mod_revision, create_revision, version).
KeyFacts = tuple[int, int, int]
#: Per key, the mod_revision it must have, or None: it must not exist.
Expectations = dict[str, int | None]


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's value with its facts (etcd's ``KeyValue``, NATS KV's ``Entry``).

    ``mod_revision`` is the revision of the key's last change (what ``if_revision``
    compares with), ``create_revision`` the revision that created it, ``version`` the
    number of changes since it was created (1 at creation). ``expires_in``: seconds
    until the key expires (written with a ttl), None if it does not.
    """

    key: str
    value: JsonValue
    mod_revision: int
    create_revision: int
    version: int
    expires_in: float | None = None

    @classmethod
    def of(
        cls, key: str, value: JsonValue, facts: KeyFacts, expires_in: float | None = None
    ) -> Entry:
        return cls(key, value, facts[0], facts[1], facts[2], expires_in)

    @property
    def facts(self) -> KeyFacts:
        return (self.mod_revision, self.create_revision, self.version)


def next_facts(facts: KeyFacts | None, revision: int) -> KeyFacts:
    """A key's facts after an update at ``revision`` (``facts`` None: it was absent)."""
    if facts is None:
        return (revision, revision, 1)
    return (revision, facts[1], facts[2] + 1)


def checked_expectations(
    expect: Mapping[str, int | None] | None, touched: Collection[str]
) -> Expectations:
    """``expect`` checked: each key touched by the update, each revision an int >= 1 or None.

    Raises ``ValueError`` for an expectation on a key the update neither sets nor
    removes (it would guard nothing), ``TypeError`` for a revision of another type.
    """
    checked: Expectations = {}
    for key, revision in (expect or {}).items():
        check_key(key)
        if revision is not None and (type(revision) is not int or revision < 1):
            if type(revision) is not int:
                raise TypeError(
                    f"expected revision of key {key!r} must be an int or None (absent), "
                    f"got {type(revision).__name__}"
                )
            raise ValueError(
                f"expected revision of key {key!r} must be >= 1 (None: the key must be "
                f"absent), got {revision}"
            )
        if key not in touched:
            raise ValueError(
                f"an expectation on key {key!r}, which the update neither sets nor removes: "
                "compare-and-set guards only the keys it changes"
            )
        checked[key] = revision
    return checked


def check_expectations(expect: Expectations, current: Callable[[str], int | None]) -> None:
    """Raise ``ConflictError`` naming every key whose ``current`` revision is not expected."""
    failed = {}
    for key, wanted in expect.items():
        now = current(key)
        if now != wanted:
            failed[key] = now
    if failed:
        raise ConflictError.of(expect, failed)
