"""Subscribers that share a fan-out group's encoded batches still get exactly their own
prefix, ``since``, interval and read-permission semantics (server/subscriptions.py).

Two kinds of test: a real server on loopback (over TCP and gRPC), checking who shares a
group and what each subscriber receives; and a model test driving the server's own
``Hub``/``Session`` with random writes, subscriptions, unsubscriptions and clients that
stop reading (so that members fall behind, leave their group and join it again), checking
every batch of every subscriber against a plain model of the state's history.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from statehub import StateServer
from statehub.auth import Authenticator, token_digest
from statehub.auth.identities import check_identities
from statehub.auth.permissions import PrefixSet
from statehub.core.change import DictionaryChange
from statehub.core.commands import CommandRegistry
from statehub.protocol import decode_batch, encode_batch
from statehub.server.limits import SessionLimits
from statehub.server.peer import Peer
from statehub.server.session import Hub, Session
from statehub.server.subscriptions import FanoutGroups
from statehub.store.state_dictionary import StateDictionary
from support import raw_session
from support.polling import DEADLINE, eventually

EVERYTHING = PrefixSet([""])


async def _group_sizes_become(server: StateServer, wanted: dict[Any, int]) -> None:
    await eventually(lambda: server.hub.fanout.sizes() == wanted, f"fan-out groups {wanted}")


async def _updates_until(session: raw_session.RawSession, sub: int, wanted: dict[str, Any]) -> int:
    """Apply ``sub``'s batches until its copy equals ``wanted``; the number of batches."""
    seen: dict[str, Any] = {}
    last = -1
    count = 0
    while seen != wanted:
        batch = await session.next_batch(sub)
        assert batch["revision"] > last, batch
        last = batch["revision"]
        if batch["snapshot"]:
            seen = {}
        seen.update(batch["updates"])
        for key in batch["removals"]:
            seen.pop(key, None)
        count += 1
    return count


@pytest.mark.parametrize("transport", ["tcp", "grpc"])
async def test_subscribers_in_one_group_each_get_their_own_semantics(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raw_session, "TRANSPORT", transport)
    async with (
        raw_session.running_server() as server,
        raw_session.connected(server) as writer,
        raw_session.connected(server) as one,
        raw_session.connected(server) as two,
    ):
        first = (await writer.request("update", updates={"a/0": 0, "b/0": 0}))["revision"]
        await writer.request("update", updates={"a/1": 1})
        a_one = await one.subscribe(prefix="a/")
        everything_one = await one.subscribe()
        a_two = await two.subscribe(prefix="a/")
        a_since = await two.subscribe(prefix="a/", since=first, epoch=server.state.epoch)
        a_paced = await two.subscribe(prefix="a/", interval=0.2)
        for session, sub in ((one, a_one), (two, a_two)):
            snapshot = await session.next_batch(sub)
            assert (snapshot["snapshot"], snapshot["updates"]) == (True, {"a/0": 0, "a/1": 1})
        resumed = await two.next_batch(a_since)
        assert (resumed["snapshot"], resumed["updates"]) == (False, {"a/1": 1})
        # Four subscriptions at interval 0 join two groups; the paced one stays alone.
        await _group_sizes_become(server, {("a/", EVERYTHING): 3, ("", EVERYTHING): 1})

        await writer.request("update", updates={"b/1": 1})
        await writer.request("update", updates={"a/2": 2}, removals=["a/0"])
        last = (await writer.request("update", updates={"a/1": 11}))["revision"]
        a_final = {"a/1": 11, "a/2": 2}
        for session, sub in ((one, a_one), (two, a_two), (two, a_since)):
            batches = [await session.next_batch(sub) for _ in range(2)]
            assert [b["sub"] for b in batches] == [sub, sub]
            assert [b["snapshot"] for b in batches] == [False, False]
            assert batches[0]["updates"] == {"a/2": 2}
            assert batches[0]["removals"] == ["a/0"]
            assert (batches[1]["updates"], batches[1]["revision"]) == ({"a/1": 11}, last)
        everything = {"a/1": 11, "a/2": 2, "b/0": 0, "b/1": 1}
        await _updates_until(one, everything_one, everything)
        assert await _updates_until(two, a_paced, a_final) >= 1
        for session, sub in ((one, a_one), (two, a_two), (two, a_since), (one, everything_one)):
            assert session.batches[sub].empty(), "a change was delivered twice"

        await two.request("unsubscribe", sub=a_two)
        await _group_sizes_become(server, {("a/", EVERYTHING): 2, ("", EVERYTHING): 1})
        await writer.request("update", updates={"a/3": 3})
        assert (await one.next_batch(a_one))["updates"] == {"a/3": 3}
        assert (await two.next_batch(a_since))["updates"] == {"a/3": 3}
        assert two.batches[a_two].empty()


async def test_a_member_of_a_group_holds_no_task_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle subscriber costs no task, coroutine or future for its subscription: the
    group's one task delivers to every member (docs/fanout.md, "Memory per subscriber")."""
    monkeypatch.setattr(raw_session, "TRANSPORT", "tcp")
    async with raw_session.running_server() as server, raw_session.connected(server) as client:
        tasks_before = len(asyncio.all_tasks())
        subs = [await client.subscribe() for _ in range(6)]
        await _group_sizes_become(server, {("", EVERYTHING): 6})
        group_task = 1
        await eventually(
            lambda: len(asyncio.all_tasks()) == tasks_before + group_task,
            "six members and no task but the group's",
        )
        await client.request("update", updates={"k": 1})
        for sub in subs:
            await _updates_until(client, sub, {"k": 1})
        await client.close()
        await _group_sizes_become(server, {})  # the session's close ended every member


async def test_subscriptions_end_with_the_state_whether_alone_or_in_a_group() -> None:
    async with raw_session.running_server() as server, raw_session.connected(server) as client:
        await client.subscribe()
        await client.subscribe(interval=0.5)  # paced: it stays alone
        await _group_sizes_become(server, {("", EVERYTHING): 1})
        (session,) = server.hub.sessions
        assert session.subscription_count == 2
        server.state.freeze()
        await eventually(lambda: session.subscription_count == 0, "both subscriptions ended")


# -- the model test ------------------------------------------------------------------------

USERS = {"all": [""], "part": ["a"]}  # read prefixes; both may write everything
KEYS = ["a", "a/x", "a/y", "ab", "b", "b/x"]
PREFIXES = ["", "a", "a/", "b"]

writes = st.builds(
    lambda updates, removals, settle: ("write", updates, removals, settle),
    st.dictionaries(st.sampled_from(KEYS), st.text(max_size=120), max_size=3),
    st.lists(st.sampled_from(KEYS), max_size=2),
    st.sampled_from([True, True, False]),  # let the server's tasks run before going on
)
subscribes = st.builds(
    lambda client, prefix, since, interval: ("subscribe", client, prefix, since, interval),
    st.integers(0, 2),
    st.sampled_from(PREFIXES),
    st.one_of(st.none(), st.integers(-1, 3)),  # relative to the current revision
    st.sampled_from([0.0, 0.0, 0.0, 0.002]),
)
reads = st.builds(lambda client: ("read", client), st.integers(0, 2))
# Weighted towards writes and reads: members join a group once read up to date, then
# get the group's batches, or fall behind when their client stops reading.
operations = st.one_of(
    writes,
    writes,
    writes,
    reads,
    reads,
    reads,
    subscribes,
    st.builds(
        lambda client, which: ("unsubscribe", client, which), st.integers(0, 2), st.integers()
    ),
    st.just(("yield",)),
)


@dataclass
class Stream:
    """What one subscriber should see, and what it saw."""

    prefix: str
    readable: PrefixSet
    since: int | None
    revision: int = -1  # of the last batch
    state: dict[str, Any] = field(default_factory=dict)
    ended: bool = False

    def shows(self, key: str) -> bool:
        return key.startswith(self.prefix) and key in self.readable


class Model:
    """The state's history: content and keys touched, per revision."""

    def __init__(self) -> None:
        self.contents: list[dict[str, Any]] = [{}]
        self.touched: list[set[str]] = [set()]

    @property
    def revision(self) -> int:
        return len(self.contents) - 1

    def write(self, updates: dict[str, Any], removals: list[str]) -> None:
        content = self.contents[-1]
        updates = {key: value for key, value in updates.items() if key not in removals}
        present = {key for key in removals if key in content}
        if not (updates or present):
            return
        new = {key: value for key, value in content.items() if key not in present}
        new.update(updates)
        self.contents.append(new)
        self.touched.append(set(updates) | present)

    def check(self, stream: Stream, batch: dict[str, Any]) -> None:
        """``batch`` holds exactly what ``stream`` may see of what changed since its last."""
        revision = batch["revision"]
        assert revision <= self.revision
        content = self.contents[revision]
        if stream.revision < 0:  # the first batch
            if stream.since is not None:  # a revision the state had reached: a delta
                assert not batch["snapshot"], batch
                start = stream.since
                stream.state = {k: v for k, v in self.contents[start].items() if stream.shows(k)}
            else:
                assert batch["snapshot"], batch
                start = None
        else:
            assert not batch["snapshot"], batch
            assert revision > stream.revision, (batch, stream)
            start = stream.revision
        if start is None:
            expected_updates = {k: v for k, v in content.items() if stream.shows(k)}
            expected_removals: set[str] = set()
        else:
            changed = {k for r in range(start + 1, revision + 1) for k in self.touched[r]}
            changed = {k for k in changed if stream.shows(k)}
            expected_updates = {k: content[k] for k in changed if k in content}
            expected_removals = changed - set(content)
        assert batch["updates"] == expected_updates, (batch, stream, start)
        assert sorted(batch["removals"]) == sorted(expected_removals), (batch, stream, start)
        if batch["snapshot"]:
            stream.state = {}
        stream.state.update(batch["updates"])
        for key in batch["removals"]:
            stream.state.pop(key, None)
        stream.revision = revision


class Client:
    def __init__(self, hub: Hub, user: str, model: Model) -> None:
        self.session = Session(hub, Peer(address="model", transport="none"))
        self.model = model
        self.user = user
        self.next_id = 1
        self.replies: dict[int, dict[str, Any]] = {}
        self.streams: dict[int, Stream] = {}

    async def send(self, request: dict[str, Any]) -> int:
        request_id = self.next_id
        self.next_id += 1
        await self.read()  # the session reads no request while it holds too much unread
        await self.session.receive(encode_batch([{"id": request_id, **request}]))
        return request_id

    async def read(self) -> None:
        """Take every frame the session has queued; check each batch against the model."""
        while self.session.queued_bytes:
            frame = await self.session.next_frame()
            assert frame is not None
            for message in decode_batch(frame):
                if "id" in message:
                    assert "ok" in message, message
                    self.replies[message["id"]] = message["ok"]
                    continue
                stream = self.streams[message["sub"]]
                assert not stream.ended, f"a batch for sub {message['sub']} after unsubscribe"
                self.model.check(stream, message)

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        request_id = await self.send(request)
        deadline = time.monotonic() + DEADLINE
        while request_id not in self.replies:
            assert time.monotonic() < deadline, f"no reply to {request}"
            await self.read()
            await asyncio.sleep(0)
        return self.replies.pop(request_id)


async def _let_the_server_run() -> None:
    """A few turns of the event loop: the session's tasks take their next steps."""
    for _ in range(5):
        await asyncio.sleep(0)


def _auth() -> Authenticator:
    data = {
        "roles": {name: {"read": prefixes, "write": [""]} for name, prefixes in USERS.items()},
        "users": {name: {"roles": [name], "token_sha256": [token_digest(name)]} for name in USERS},
    }
    return Authenticator(check_identities(data, "<test>"))


async def _run(operations: list[tuple[Any, ...]], max_queued: int) -> None:
    hub = Hub(
        state=StateDictionary(),
        commands=CommandRegistry(),
        max_message_bytes=1 << 20,
        keepalive_s=10,
        limits=SessionLimits(max_queued_bytes=max_queued),
        auth=_auth(),
    )
    model = Model()
    writer = Client(hub, "all", model)
    clients = [Client(hub, user, model) for user in ("all", "all", "part")]
    try:
        for client in (writer, *clients):
            await client.request({"op": "hello", "credential": client.user})
        for operation in operations:
            match operation:
                case ("write", updates, removals, settle):
                    await writer.request({"op": "update", "updates": updates, "removals": removals})
                    model.write(updates, removals)
                    if settle:
                        await _let_the_server_run()
                case ("subscribe", index, prefix, since, interval):
                    client = clients[index]
                    if since is not None:
                        since = max(0, model.revision + since)
                    request = {
                        "op": "subscribe",
                        "prefix": prefix,
                        "since": since,
                        "epoch": hub.state.epoch,
                        "interval": interval,
                    }
                    request_id = await client.send(request)
                    readable = PrefixSet(USERS[client.user])
                    # The reply comes before any batch of the new subscription.
                    deadline = time.monotonic() + DEADLINE
                    while request_id not in client.replies:
                        assert time.monotonic() < deadline
                        await client.read()
                        await asyncio.sleep(0)
                    sub = client.replies.pop(request_id)["sub"]
                    if since is not None and since > model.revision:
                        since = None  # a revision the state has not reached: a snapshot
                    client.streams[sub] = Stream(prefix, readable, since)
                case ("read", index):
                    await _let_the_server_run()
                    await clients[index].read()
                    await _let_the_server_run()
                case ("unsubscribe", index, which):
                    client = clients[index]
                    live = [sub for sub, stream in client.streams.items() if not stream.ended]
                    if live:
                        sub = live[which % len(live)]
                        await client.request({"op": "unsubscribe", "sub": sub})
                        client.streams[sub].ended = True
                case ("yield",):
                    await _let_the_server_run()
        # Every subscriber, read until it is up to date, holds what it may see.
        deadline = time.monotonic() + DEADLINE
        for client in clients:
            for stream in client.streams.values():
                if stream.ended:
                    continue
                wanted = {k: v for k, v in model.contents[-1].items() if stream.shows(k)}
                while stream.state != wanted or stream.revision < 0:
                    assert time.monotonic() < deadline, (stream, wanted)
                    await client.read()
                    await asyncio.sleep(0.001)
    finally:
        for client in (writer, *clients):
            client.session.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    operations=st.lists(operations, min_size=8, max_size=40),
    max_queued=st.sampled_from([300, 2_000, 1 << 20]),
)
@example(  # two members of one group; the first stops reading, leaves it, comes back
    operations=[
        ("subscribe", 0, "", None, 0.0),
        ("subscribe", 1, "", None, 0.0),
        ("read", 0),
        ("read", 1),
        *(("write", {key: "x" * 100}, [], True) for key in ("a", "b", "a/x")),
        ("read", 1),
        ("write", {"b": "y" * 100}, ["a"], True),
        ("read", 0),
        ("write", {"a": "z"}, [], True),
        ("read", 0),
        ("read", 1),
    ],
    max_queued=300,
)
def test_every_subscriber_gets_exactly_its_changes(
    operations: list[tuple[Any, ...]], max_queued: int
) -> None:
    """Batches cover exactly the visible changes since the subscriber's last batch, in
    order, whether the subscriber is alone or shares a group, falls behind or rejoins."""
    asyncio.run(_run(operations, max_queued))


class _PacedDelivery:
    """A delivery other than the session protocol's: paced, counting its encodings."""

    interval = 0.05

    def __init__(self) -> None:
        self.encoded: list[int] = []

    def encode(self, revision: int, change: DictionaryChange) -> list[bytes]:
        self.encoded.append(revision)
        return [repr(sorted(change.updates.items())).encode()]


class _Member:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, int, int]] = []
        self.keeps_up = True
        self.resume_from: int | None = -1  # -1: still in its group

    def offer(self, bodies: list[bytes], since: int, revision: int) -> bool:
        if not self.keeps_up:
            return False
        self.received.extend((body, since, revision) for body in bodies)
        return True

    def left(self, resume_from: int | None) -> None:
        self.resume_from = resume_from


async def test_the_engine_encodes_once_for_every_member_of_any_delivery() -> None:
    """NanoVer's deliveries are another encoder and pacing of the same groups: changes
    that come together are coalesced, encoded once, and the same bytes go to every member;
    a member that does not keep up leaves with the revision it was sent up to."""
    state = StateDictionary()
    delivery = _PacedDelivery()
    groups = FanoutGroups(SimpleNamespace(state=state), delivery)  # type: ignore[arg-type]
    members = [_Member(), _Member()]
    state.update_state(None, DictionaryChange({"seed": 0}))  # revision 1
    for member in members:
        with state.get_change_buffer() as view:
            view.flush_changed_blocking(timeout=0)
            assert groups.join(member, view, "", EVERYTHING) is not None
    assert groups.sizes() == {("", EVERYTHING): 2}

    for value in range(3):  # before the group's next flush: one encoding of the three
        state.update_state(None, DictionaryChange({"k": value}))
    await eventually(lambda: delivery.encoded == [4])
    assert members[0].received == members[1].received == [(b"[('k', 2)]", 1, 4)]
    assert members[0].received[0][0] is members[1].received[0][0]  # shared, not copied

    members[1].keeps_up = False
    state.update_state(None, DictionaryChange({"k": 9}))
    await eventually(lambda: members[1].resume_from == 4)  # alone from there
    assert members[0].received[-1] == (b"[('k', 9)]", 4, 5)
    assert groups.sizes() == {("", EVERYTHING): 1}
    state.freeze()
    await eventually(lambda: members[0].resume_from is None)  # the state ended
