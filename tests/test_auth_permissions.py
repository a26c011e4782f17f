"""The compiled permission checks agree with a plain reading of the rules, on any input."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statehub.auth import (
    AdminRight,
    Grant,
    PermissionDeniedError,
    Permissions,
    PrefixSet,
    Principal,
    Right,
)

# A small alphabet makes prefixes of one another, and keys under them, common.
names = st.text(alphabet="ab/.", max_size=5)
patterns = st.text(alphabet="ab.*?", max_size=4)
grants = st.builds(
    Grant,
    read=st.tuples(*[names] * 2) | st.just(()),
    write=st.lists(names, max_size=3).map(tuple),
    lease=st.lists(names, max_size=3).map(tuple),
    lock=st.lists(names, max_size=3).map(tuple),
    call=st.lists(patterns, max_size=3).map(tuple),
    admin=st.frozensets(st.sampled_from(list(AdminRight))),
)


def model_allows(roles: list[Grant], right: Right, name: str) -> bool:
    """The rule as written: some role grants the right on a prefix (or pattern) of ``name``."""
    if right is Right.CALL:
        return any(fnmatch.fnmatchcase(name, p) for role in roles for p in role.call)
    return any(name.startswith(p) for role in roles for p in getattr(role, right.value))


@settings(max_examples=400, deadline=None)
@given(
    roles=st.lists(grants, max_size=4),
    requests=st.lists(st.tuples(st.sampled_from(list(Right)), names), min_size=1, max_size=20),
    action=st.sampled_from(list(AdminRight)),
)
def test_checker_agrees_with_the_model(
    roles: list[Grant], requests: list[tuple[Right, str]], action: AdminRight
) -> None:
    principal = Principal("p", Permissions.of(roles), method="token")
    for right, name in requests:
        expected = model_allows(roles, right, name)
        assert principal.permissions.allows(right, name) is expected, (right, name)
        if expected:
            principal.require(right, [name], "op")
        else:
            with pytest.raises(PermissionDeniedError, match=right.value) as caught:
                principal.require(right, [name], "op")
            assert repr(name) in str(caught.value)
    has_admin = any(action in role.admin for role in roles)
    if has_admin:
        principal.require_admin(action, "op")
    else:
        with pytest.raises(PermissionDeniedError, match=action.value):
            principal.require_admin(action, "op")


@given(prefixes=st.lists(names, max_size=6), key=names)
def test_prefix_table_is_minimal_and_exact(prefixes: list[str], key: str) -> None:
    table = PrefixSet(prefixes)
    for one in table.prefixes:
        assert not any(other != one and one.startswith(other) for other in table.prefixes)
    assert (key in table) is any(key.startswith(p) for p in prefixes)


def test_denial_names_the_key_the_right_and_the_op() -> None:
    principal = Principal("bob", Permissions.of([Grant(write=("lab/",))]), method="token")
    principal.require(Right.WRITE, ["lab/x"], "update")
    with pytest.raises(PermissionDeniedError) as caught:
        principal.require(Right.WRITE, ["lab/x", "other"], "update")
    assert str(caught.value) == "token identity 'bob' lacks the write right on key 'other' (update)"
