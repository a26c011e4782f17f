"""Rights and their precompiled checks: what one identity may do, decided per request.

A role grants rights per key prefix (read, write, lease, lock), per command name pattern
(call) and admin actions. An identity's roles are merged once, when it authenticates, into
``Permissions``: per right a ``PrefixSet`` (a sorted table of prefixes, none a prefix of
another, so one binary search answers a key) and for commands one compiled regular
expression. No request scans the roles.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from statehub.auth.errors import PermissionDeniedError


class Right(StrEnum):
    """A right on keys (or lock names, or command names) that a role grants by prefix."""

    READ = "read"  # get, subscribe (and which keys a subscription carries)
    WRITE = "write"  # update, remove
    LEASE = "lease"  # leases on keys
    LOCK = "lock"  # read/write locks, by lock name
    CALL = "call"  # commands, by name pattern


class AdminRight(StrEnum):
    """A server-wide action beyond keys."""

    CLEAR_LEASES = "clear_leases"
    FORCE_UNLOCK = "force_unlock"  # an endpoint lockout, a lock or a lease held by someone else
    SESSIONS = "sessions"  # see every session and its identity
    REGISTER_COMMANDS = "register_commands"
    METRICS = "metrics"  # read the web port's /metrics and /readyz


#: What ``admin: ["*"]`` in the identities file stands for.
ALL_ADMIN = frozenset(AdminRight)


class PrefixSet:
    """Keys starting with any of some prefixes, answered by one binary search.

    The prefixes are reduced to a sorted table in which none is a prefix of another (a
    longer one under a shorter one adds nothing). Then the only prefix that can match a key
    is the greatest one not above it: any prefix ``q`` with ``p < q <= key``, where ``p``
    is a prefix of ``key``, must itself start with ``p``, and the table has no such ``q``.
    """

    __slots__ = ("_known", "_table", "everything")

    def __init__(self, prefixes: Iterable[str] = ()) -> None:
        table: list[str] = []
        for prefix in sorted(set(prefixes)):
            if table and prefix.startswith(table[-1]):
                continue  # sorted order puts a covering prefix right before what it covers
            table.append(prefix)
        self._table = tuple(table)
        #: True if the empty prefix is granted: every key (the fast path of a check).
        self.everything = self._table == ("",)
        #: Answers already found: clients write the same keys again and again, and a dict
        #: lookup costs a fraction of the search. Bounded; cleared when full.
        self._known: dict[str, bool] = {}

    @property
    def prefixes(self) -> tuple[str, ...]:
        return self._table

    def __contains__(self, key: str) -> bool:
        known = self._known.get(key)
        if known is not None:
            return known
        if self.everything:
            return True
        table = self._table
        index = bisect.bisect_right(table, key) - 1
        found = index >= 0 and key.startswith(table[index])
        if len(self._known) >= _KNOWN_KEYS:
            self._known.clear()
        self._known[key] = found
        return found

    def __bool__(self) -> bool:
        return bool(self._table)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrefixSet) and other._table == self._table

    def __hash__(self) -> int:
        return hash(self._table)

    def __repr__(self) -> str:
        return f"PrefixSet({list(self._table)!r})"


#: Keys whose answer one ``PrefixSet`` remembers.
_KNOWN_KEYS = 65_536


class NamePatterns:
    """Command names matching any of some shell-style patterns (``endpoint.*``), one regex."""

    __slots__ = ("_patterns", "_regex")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._patterns = tuple(sorted(set(patterns)))
        joined = "|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in self._patterns)
        self._regex = re.compile(joined) if joined else None

    @property
    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    def __contains__(self, name: str) -> bool:
        return self._regex is not None and self._regex.match(name) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NamePatterns) and other._patterns == self._patterns

    def __hash__(self) -> int:
        return hash(self._patterns)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one role grants, as written in the identities file."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    lease: tuple[str, ...] = ()
    lock: tuple[str, ...] = ()
    call: tuple[str, ...] = ()
    admin: frozenset[AdminRight] = frozenset()


@dataclass(frozen=True, slots=True, eq=True)
class Permissions:
    """The merged, compiled rights of one identity (the union of its roles' grants)."""

    read: PrefixSet = field(default_factory=PrefixSet)
    write: PrefixSet = field(default_factory=PrefixSet)
    lease: PrefixSet = field(default_factory=PrefixSet)
    lock: PrefixSet = field(default_factory=PrefixSet)
    call: NamePatterns = field(default_factory=NamePatterns)
    admin: frozenset[AdminRight] = frozenset()

    @classmethod
    def of(cls, grants: Iterable[Grant]) -> Permissions:
        grants = list(grants)
        return cls(
            read=PrefixSet(p for grant in grants for p in grant.read),
            write=PrefixSet(p for grant in grants for p in grant.write),
            lease=PrefixSet(p for grant in grants for p in grant.lease),
            lock=PrefixSet(p for grant in grants for p in grant.lock),
            call=NamePatterns(p for grant in grants for p in grant.call),
            admin=frozenset(right for grant in grants for right in grant.admin),
        )

    @classmethod
    def everything(cls) -> Permissions:
        """Every right (a server without ``--auth``, and the server's own code)."""
        return cls.of([Grant(("",), ("",), ("",), ("",), ("*",), ALL_ADMIN)])

    def allows(self, right: Right, name: str) -> bool:
        """Whether ``right`` is granted on ``name`` (a key, lock name or command name)."""
        if right is Right.CALL:
            return name in self.call
        prefixes: PrefixSet = getattr(self, right.value)
        return name in prefixes


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated identity: its name, how it proved it, and its compiled rights."""

    name: str
    permissions: Permissions
    roles: tuple[str, ...] = ()
    #: "token", "jwt", "certificate", "anonymous" or "none" (a server without --auth).
    method: str = "none"

    def require(self, right: Right, names: Iterable[str], op: str) -> None:
        """``PermissionDeniedError`` naming the first key (or lock, or command) not allowed."""
        # Compared by identity, not looked up: an enum's hash is a Python-level call, and
        # this runs on every request.
        permissions = self.permissions
        prefixes: PrefixSet
        if right is Right.WRITE:
            prefixes = permissions.write
        elif right is Right.READ:
            prefixes = permissions.read
        elif right is Right.LEASE:
            prefixes = permissions.lease
        elif right is Right.LOCK:
            prefixes = permissions.lock
        else:
            for name in names:
                if name not in permissions.call:
                    raise self._denied(f"the call right on command {name!r} ({op})")
            return
        if prefixes.everything:
            return
        for name in names:
            if name not in prefixes:
                what = "lock" if right is Right.LOCK else "key"
                raise self._denied(f"the {right.value} right on {what} {name!r} ({op})")

    def require_some(self, right: Right, op: str) -> None:
        """``PermissionDeniedError`` unless ``right`` is granted on at least some keys."""
        if right is not Right.CALL and not getattr(self.permissions, right.value):
            raise self._denied(f"the {right.value} right on any key ({op})")

    def require_admin(self, action: AdminRight, op: str) -> None:
        if action not in self.permissions.admin:
            raise self._denied(f"the admin right {action.value!r} ({op})")

    def _denied(self, missing: str) -> PermissionDeniedError:
        return PermissionDeniedError(f"{self.describe()} lacks {missing}")

    def describe(self) -> str:
        if self.method == "anonymous":
            return "an anonymous client"
        return f"{self.method} identity {self.name!r}"


#: The identity of every session on a server without ``--auth``: it may do everything.
UNRESTRICTED = Principal("anyone", Permissions.everything(), method="none")
