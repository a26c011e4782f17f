"""The session, driven with random roles and random requests, agrees with a plain model.

The model reads the rules as written (some role of the user grants the right on a prefix
of the key, or a pattern of the command name); the session under test is the server's
own, fed frames as a transport would.
"""

from __future__ import annotations

import asyncio
import fnmatch
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from statehub.auth import Authenticator, token_digest
from statehub.auth.identities import check_identities
from statehub.core.commands import CommandRegistry
from statehub.protocol import decode_batch, encode_batch
from statehub.server.peer import Peer
from statehub.server.session import Hub, Session
from statehub.store.state_dictionary import StateDictionary

names = st.text(alphabet="ab/", min_size=1, max_size=4)
prefixes = st.lists(st.text(alphabet="ab/", max_size=3), max_size=3)
roles = st.fixed_dictionaries(
    {
        "read": prefixes,
        "write": prefixes,
        "lease": prefixes,
        "lock": prefixes,
        "call": st.lists(st.sampled_from(["a*", "b", "*", "?"]), max_size=2),
    }
)
requests = st.one_of(
    st.builds(
        lambda keys: ("read", keys, {"op": "get", "keys": keys}), st.lists(names, max_size=3)
    ),
    st.builds(
        lambda updates, removals: (
            "write",
            [*updates, *removals],
            {"op": "update", "updates": updates, "removals": removals},
        ),
        st.dictionaries(names, st.integers(), max_size=2),
        st.lists(names, max_size=2),
    ),
    st.builds(
        lambda keys: ("lease", keys, {"op": "leases", "acquire": dict.fromkeys(keys, 5.0)}),
        st.lists(names, max_size=2),
    ),
    st.builds(
        lambda key: ("lock", [key], {"op": "test_lock", "key": key, "exclusive": True}), names
    ),
    st.builds(lambda name: ("call", [name], {"op": "call", "name": name}), st.sampled_from("ab")),
)


def allowed(grants: list[dict[str, list[str]]], right: str, names: list[str]) -> bool:
    if right == "call":
        return all(any(fnmatch.fnmatchcase(n, p) for g in grants for p in g["call"]) for n in names)
    return all(any(n.startswith(p) for g in grants for p in g[right]) for n in names)


@settings(max_examples=150, deadline=None)
@given(
    role_list=st.lists(roles, min_size=1, max_size=3),
    held=st.lists(st.integers(min_value=0, max_value=2), max_size=3),
    batch=st.lists(requests, min_size=1, max_size=8),
)
def test_the_session_agrees_with_the_model(
    role_list: list[dict[str, list[str]]], held: list[int], batch: list[tuple[str, list[str], Any]]
) -> None:
    user_roles = sorted({f"r{i % len(role_list)}" for i in held}) or ["r0"]
    data = {
        "roles": {f"r{i}": role for i, role in enumerate(role_list)},
        "users": {"u": {"roles": user_roles, "token_sha256": [token_digest("t")]}},
    }
    grants = [role_list[int(name[1:])] for name in user_roles]
    replies = asyncio.run(_run(Authenticator(check_identities(data, "<test>")), batch))
    for (right, keys, request), reply in zip(batch, replies, strict=True):
        expected = allowed(grants, right, keys)
        status = reply.get("error", {}).get("status")
        assert (status != "PERMISSION_DENIED") is expected, (request, reply, grants)


async def _run(auth: Authenticator, batch: list[tuple[str, list[str], Any]]) -> list[Any]:
    commands = CommandRegistry()
    for name in "ab":
        commands.register(name, lambda: None)
    hub = Hub(
        state=StateDictionary(),
        commands=commands,
        max_message_bytes=1 << 20,
        keepalive_s=10,
        auth=auth,
    )
    session = Session(hub, Peer(address="test", transport="none"))
    frames = [{"id": 0, "op": "hello", "credential": "t"}]
    frames += [{"id": i + 1, **request} for i, (_, _, request) in enumerate(batch)]
    await session.receive(encode_batch(frames))
    replies: dict[int, Any] = {}
    try:
        async with asyncio.timeout(10):
            while len(replies) < len(frames):
                frame = await session.next_frame()
                assert frame is not None
                for message in decode_batch(frame):
                    replies[message["id"]] = message
    finally:
        session.close()
    return [replies[i + 1] for i in range(len(batch))]
