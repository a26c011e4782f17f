"""How a change reaches a subscriber: alone, or in a fan-out group that shares the work.

A subscription starts **alone**. It has its own view of the state (a core
``DictionaryChangeBuffer`` with its prefix, its ``since`` and the keys its principal may
read). The view's first flush goes out at once: the snapshot, or what changed since
``since``. After that the subscription waits for its interval, waits until the
transport has written what its session has queued (changes keep coalescing in the view
meanwhile, so a slow reader gets fewer, larger batches), flushes the view and queues the
encoded batch in the session's outbox (``outbox.py``). The transport's writer loop
sends it. Done per subscriber, that is one wake-up, one catch-up with the change log
and one encoding per subscriber per change.

At interval 0, subscribers that see the same keys (same prefix, same read permissions)
and have been sent everything up to the same revision need the same batches, except for
their ``sub`` id. Such a subscription **joins a fan-out group**. One task per group
waits for changes, catches one view up, encodes the batch body once
(``change_batch_bodies``), and queues ``batch_header(sub) + body`` in each member's
outbox. A member has no task of its own meanwhile: it gets one again when it leaves.

A member whose client does not keep up (more than ``LAG_BYTES`` still queued when the
next batch is due) leaves the group. It goes on alone from the last revision it was sent,
so it gets what it missed coalesced, with no gap and no duplicate. A subscription
alone at interval 0 joins a group when its view is caught up at the same revision as the
group (checked under the state's lock, so no change can come in between). Subscriptions
with an interval above 0 always stay alone: their pacing is their own.

The groups are one engine for every edge, parameterised by a ``Delivery``: how a change
is encoded (once per group) and how the group is paced. The session protocol's is
``SessionBatches`` (change batches, at every change); the NanoVer WebSocket edge has its
own ``FanoutGroups`` with NanoVer's ``state`` messages on a steady 30 Hz clock
(``web/nanover_socket.py``), and NanoVer gRPC one per ``update_interval`` asked for, with
serialized ``StateUpdate`` messages (``nanover_compat.py``). A ``Member`` queues the
shared bytes its own way: a session's subscription behind its ``sub`` header in its
outbox, refusing when more than ``LAG_BYTES`` wait; a NanoVer connection as the next
WebSocket message, refusing while it still writes the previous one; a NanoVer gRPC call
for its handler to yield, refusing while the previous update still waits there. Either
way a member that refuses leaves with the revision it was sent up to, catches up alone
from its own view, and joins again once caught up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Generic, Protocol, TypeVar

from statehub.auth.permissions import PrefixSet
from statehub.core.buffers import DictionaryChangeBuffer, KeyFilter
from statehub.core.change import DictionaryChange
from statehub.core.pacing import Pacer, SteadyPacer
from statehub.errors import ObjectFrozenError
from statehub.server.change_batches import (
    batch_header,
    change_batch_bodies,
    change_batch_pieces,
)
from statehub.server.limits import SessionLimits
from statehub.server.outbox import FRAME_HEADER_BYTES, Outbox
from statehub.store.state_dictionary import StateDictionary

logger = logging.getLogger(__name__)

#: Bytes a group member's session may still have queued when a batch is due; above
#: that (capped at the session's ``max_queued_bytes``) it leaves the group and coalesces
#: alone. Large enough that a client that is only a few batches behind stays in.
LAG_BYTES = 64 * 1024

#: Subscriptions sharing a group see the same keys: same prefix, same readable keys.
GroupKey = tuple[str, PrefixSet]


class DeliveryObserver(Protocol):
    def delivered(self, revisions: int) -> None:
        """A change batch went out carrying ``revisions`` commits."""


class Hub(Protocol):
    """What delivery needs of the server's shared parts (``session.Hub`` has them): named
    here, not imported, so that sessions use subscriptions and not the other way round."""

    @property
    def state(self) -> StateDictionary: ...

    @property
    def max_message_bytes(self) -> int: ...

    @property
    def limits(self) -> SessionLimits: ...

    @property
    def fanout(self) -> FanoutGroups[Subscription]: ...

    @property
    def observer(self) -> DeliveryObserver: ...


class SubscriptionOwner(Protocol):
    """The session a subscription belongs to (``session.Session``), told when it ends by
    itself; named here for the same reason as ``Hub``."""

    def subscription_ended(self, subscription: Subscription) -> None:
        """``subscription`` delivers no more: the state ended (or it failed)."""


class Subscription:
    """One ``subscribe`` of a session: what it watches and where its batches go.

    It has a task only while it delivers alone. In a fan-out group it has none: the
    group's task queues its batches, and ``left`` starts a new task when the group lets
    it go. An idle subscriber (nearly always in a group) so holds no task, coroutine
    frame or future of its own (docs/fanout.md, "Memory per subscriber").
    """

    __slots__ = (
        "_group",
        "_hub",
        "_owner",
        "_task",
        "header",
        "outbox",
        "pacer",
        "prefix",
        "readable",
        "sub",
    )

    def __init__(
        self,
        hub: Hub,
        owner: SubscriptionOwner,
        outbox: Outbox,
        sub: int,
        pacer: Pacer,
        prefix: str,
        readable: PrefixSet,
    ) -> None:
        self.sub = sub
        self.prefix = prefix
        self.readable = readable
        self.pacer = pacer
        self.header = batch_header(sub)
        self.outbox = outbox
        self._hub = hub
        self._owner = owner
        #: While it delivers alone: the task doing it.
        self._task: asyncio.Future[None] | None = None
        #: While in a fan-out group: the group (it is among the group's members).
        self._group: FanoutGroup[Subscription] | None = None

    @property
    def key_filter(self) -> KeyFilter | None:
        return None if self.readable.everything else self.readable.__contains__

    def start(self, since: int | None) -> None:
        """Deliver batches from ``since`` (None: a snapshot first) until ``stop``, or until
        the state ends (then its owner is told)."""
        self._go_alone(since, first=True)

    def stop(self) -> None:
        """Deliver nothing more (unsubscribed, session closed); the owner is not told."""
        task, group = self._task, self._group
        self._task = self._group = None
        if task is not None:
            task.cancel()
        if group is not None:
            group.discard(self)

    def offer(self, bodies: list[bytes], since: int, revision: int) -> bool:
        """Queue a shared batch behind this subscription's header; False when its client
        has more than ``LAG_BYTES`` still queued (it leaves the group and coalesces alone)."""
        outbox = self.outbox
        if outbox.queued_bytes > min(LAG_BYTES, self._hub.limits.max_queued_bytes):
            return False
        header = self.header
        for body in bodies:
            outbox.push(header + body)
        self._hub.observer.delivered(revision - since)
        return True

    def left(self, resume_from: int | None) -> None:
        if self._group is None:
            return  # stopped meanwhile: nothing to resume
        # A task still set is the one that joined, ended: its end must not count as the
        # subscription's (the owner is told once).
        self._group = self._task = None
        if resume_from is None:
            self._owner.subscription_ended(self)
        else:
            self._go_alone(resume_from, first=False)

    def _go_alone(self, since: int | None, first: bool) -> None:
        task = self._task = asyncio.ensure_future(self._alone(since, first))
        task.add_done_callback(self._alone_done)

    def _alone_done(self, task: asyncio.Future[None]) -> None:
        if task is not self._task:
            return  # stopped: its owner ended it
        self._task = None
        if self._group is None:  # not off to a group: the state ended (or a bug; logged)
            self._owner.subscription_ended(self)

    async def _alone(self, since: int | None, first: bool) -> None:
        """Deliver from an own view until caught up with a group (then it is in it, and
        this task ends), or until the state ends.

        ``first``: the subscription's first batch, sent at once even if empty. Otherwise
        ``since`` is the revision a group member was sent up to when it left.
        """
        hub, outbox, pacer = self._hub, self.outbox, self.pacer
        budget = hub.max_message_bytes - FRAME_HEADER_BYTES
        max_queued = hub.limits.max_queued_bytes
        may_share = pacer.interval == 0
        with hub.state.get_change_buffer(since, self.prefix, self.key_filter) as view:
            snapshot = view.starts_with_snapshot
            flush_now = first or snapshot  # a resumed view that lost its history: at once
            sent_up_to = view.cursor if since is None or first else since
            while True:
                await asyncio.sleep(pacer.delay())
                # Let the transport write what is queued first: changes keep coalescing
                # in the view meanwhile, so a slow reader gets fewer, larger batches.
                await outbox.wait_below(0)
                if (
                    may_share
                    and not flush_now
                    and (group := hub.fanout.join(self, view, self.prefix, self.readable))
                ):
                    self._group = group
                    return
                try:
                    if flush_now:
                        change = _flush_now(view)
                    else:
                        change = await view.flush_changed_async(copy=False)
                except ObjectFrozenError:
                    return
                pieces = change_batch_pieces(
                    self.sub, view.cursor, snapshot, change.updates, change.removals, budget
                )
                async for piece in pieces:
                    await outbox.wait_below(max_queued)
                    outbox.push(piece)
                pacer.flushed()
                if not first:
                    hub.observer.delivered(view.cursor - sent_up_to)
                sent_up_to = view.cursor
                first = flush_now = snapshot = False


class Member(Protocol):
    """A subscriber a fan-out group delivers to: a session's subscription, a NanoVer
    connection. It queues the shared bytes its own way (framed, written by its transport)."""

    def offer(self, bodies: list[bytes], since: int, revision: int) -> bool:
        """Queue the encoded change from ``since`` to ``revision``; False if it is too far
        behind to take it (then it leaves the group, with nothing queued). A member that is
        leaving by itself (``FanoutGroup.discard`` is on its way) queues nothing."""

    def left(self, resume_from: int | None) -> None:
        """It is out of the group: go on alone from ``resume_from`` (None: the state ended)."""


class Delivery(Protocol):
    """What a family of fan-out groups sends: its encoding, its pacing."""

    @property
    def interval(self) -> float:
        """Seconds between two flushes of a group (a steady clock); 0: at every change."""

    def encode(self, revision: int, change: DictionaryChange) -> list[bytes]:
        """``change`` (up to ``revision``) as the bodies every member queues; [] for none."""


class SessionBatches:
    """The session protocol's delivery: change batches cut under the message limit, sent
    as each change comes (interval 0)."""

    interval = 0.0

    def __init__(self, max_message_bytes: int) -> None:
        self._budget = max_message_bytes - FRAME_HEADER_BYTES

    def encode(self, revision: int, change: DictionaryChange) -> list[bytes]:
        return change_batch_bodies(revision, False, change.updates, change.removals, self._budget)


#: The kind of member a family of groups holds (a session's subscription, a connection).
MemberT = TypeVar("MemberT", bound=Member)


class FanoutGroup(Generic[MemberT]):
    """Members that see the same keys, all sent up to ``position``: one flush of one view,
    one encoding per change (per tick, when paced), the same bytes queued to each."""

    def __init__(
        self, groups: FanoutGroups[MemberT], key: GroupKey, view: DictionaryChangeBuffer
    ) -> None:
        self._groups = groups
        self.key = key
        self._view = view
        #: Every member has been sent every change up to this revision.
        self.position = view.cursor
        self._members: dict[MemberT, None] = {}  # in joining order
        self._closed = False
        self._task = asyncio.ensure_future(self._run(groups.delivery.interval))

    @property
    def ended(self) -> bool:
        return self._closed or self._view.frozen

    @property
    def members(self) -> frozenset[MemberT]:
        return frozenset(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: MemberT) -> None:
        self._members[member] = None

    def discard(self, member: MemberT) -> None:
        """``member`` goes (unsubscribed, closed, or alone by choice); nothing is said to it."""
        if self._members.pop(member, _ABSENT) is not _ABSENT and not self._members:
            self.close()

    def deliver_pending(self) -> None:
        """Send members what the group's view holds now (a member is about to join)."""
        try:
            change = self._view.flush_changed_blocking(timeout=0, copy=False)
        except TimeoutError:
            self.position = self._view.cursor  # nothing these members see changed since
            return
        except ObjectFrozenError:
            return  # the group's task ends the group
        self._deliver(change)

    def close(self) -> None:
        """End the group: members still in it are told (the state ended)."""
        if self._closed:
            return
        self._closed = True
        self._groups.forget(self)
        members = list(self._members)
        self._members.clear()
        for member in members:
            member.left(None)
        self._task.cancel()
        self._groups.views.remove_view(self._view)

    async def _run(self, interval: float) -> None:
        # Paced on a steady clock (NanoVer's 30 Hz): a tick a little late keeps the rate.
        pacer = SteadyPacer(interval) if interval else None
        try:
            while True:
                if pacer is not None:
                    await asyncio.sleep(pacer.delay())
                self._deliver(await self._view.flush_changed_async(copy=False))
                if pacer is not None:
                    pacer.flushed()
        except ObjectFrozenError:
            self.close()
        except Exception:  # a bug: end the members' subscriptions rather than stall them
            logger.exception("fan-out group %r failed; its subscriptions end", self.key)
            self.close()

    def _deliver(self, change: DictionaryChange) -> None:
        """Encode the change once; queue it to every member that keeps up. One that does
        not leaves, and goes on alone from the last revision it was sent: coalesced, no gap."""
        revision = self._view.cursor
        bodies = self._groups.delivery.encode(revision, change)
        since, self.position = self.position, revision
        for member in list(self._members):
            if not member.offer(bodies, since, revision):
                del self._members[member]
                member.left(since)
        if not self._members:
            self.close()


class FanoutGroups(Generic[MemberT]):
    """The fan-out groups of one hub for one delivery, by what their members see."""

    def __init__(self, hub: Hub, delivery: Delivery) -> None:
        self.hub = hub
        self.delivery = delivery
        self.views = hub.state.views
        self._groups: dict[GroupKey, FanoutGroup[MemberT]] = {}

    def join(
        self, member: MemberT, view: DictionaryChangeBuffer, prefix: str, readable: PrefixSet
    ) -> FanoutGroup[MemberT] | None:
        """Put ``member`` (alone, delivering from ``view``) in its group if it can be.

        It can if its view is caught up and the group, once it has sent its members what
        is pending, stands at the same revision: both have then shown everything up to it.
        """
        with self.views.lock:  # no change comes in while the two positions are compared
            if not view.caught_up():
                return None
            key = (prefix, readable)
            group = self._groups.get(key)
            if group is not None:
                group.deliver_pending()  # which may end it: its members all fell behind
            if group is None or group.ended:
                views = self.views
                key_filter = None if readable.everything else readable.__contains__
                group_view = views.open_view(views.revision, prefix, key_filter)
                group = self._groups[key] = FanoutGroup(self, key, group_view)
            if group.position != view.cursor:
                if not len(group):
                    group.close()
                return None
            group.add(member)
            return group

    def forget(self, group: FanoutGroup[MemberT]) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]

    def sizes(self) -> dict[GroupKey, int]:
        """Members per group, by prefix and readable keys (``/metrics``, tests)."""
        return {key: len(group) for key, group in self._groups.items()}

    def members(self) -> frozenset[MemberT]:
        """Every member of every group."""
        return frozenset(member for group in self._groups.values() for member in group.members)


_ABSENT = object()


def _flush_now(view: DictionaryChangeBuffer) -> DictionaryChange:
    """What the view holds right now, possibly nothing (a subscription's first batch)."""
    try:
        return view.flush_changed_blocking(timeout=0, copy=False)
    except TimeoutError:
        return DictionaryChange()
