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
outbox. A member's own task sleeps meanwhile.

A member whose client does not keep up (more than ``LAG_BYTES`` still queued when the
next batch is due) leaves the group. It goes on alone from the last revision it was sent,
so it gets what it missed coalesced, with no gap and no duplicate. A subscription
alone at interval 0 joins a group when its view is caught up at the same revision as the
group (checked under the state's lock, so no change can come in between). Subscriptions
with an interval above 0 always stay alone: their pacing is their own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from statehub.auth.permissions import PrefixSet
from statehub.core.buffers import DictionaryChangeBuffer, KeyFilter
from statehub.core.change import DictionaryChange
from statehub.core.pacing import Pacer
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
    def fanout(self) -> FanoutGroups: ...

    @property
    def observer(self) -> DeliveryObserver: ...


class Subscription:
    """One ``subscribe`` of a session: what it watches and where its batches go."""

    __slots__ = ("_hub", "header", "outbox", "pacer", "prefix", "readable", "sub")

    def __init__(
        self, hub: Hub, outbox: Outbox, sub: int, pacer: Pacer, prefix: str, readable: PrefixSet
    ) -> None:
        self.sub = sub
        self.prefix = prefix
        self.readable = readable
        self.pacer = pacer
        self.header = batch_header(sub)
        self.outbox = outbox
        self._hub = hub

    @property
    def key_filter(self) -> KeyFilter | None:
        return None if self.readable.everything else self.readable.__contains__

    async def run(self, since: int | None) -> None:
        """Deliver batches until cancelled, or until the state ends (then return)."""
        resume_from, first = since, True
        while True:
            group = await self._alone(resume_from, first)
            if group is None:
                return
            first = False
            resume_from = await group.hold(self)
            if resume_from is None:
                return

    async def _alone(self, since: int | None, first: bool) -> FanoutGroup | None:
        """Deliver from an own view; the group joined once caught up, None if the state ended.

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
                if may_share and not flush_now and (group := hub.fanout.join(self, view)):
                    return group
                try:
                    if flush_now:
                        change = _flush_now(view)
                    else:
                        change = await view.flush_changed_async(copy=False)
                except ObjectFrozenError:
                    return None
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


class FanoutGroup:
    """Members at interval 0 that see the same keys, all sent up to ``position``."""

    def __init__(self, groups: FanoutGroups, key: GroupKey, view: DictionaryChangeBuffer) -> None:
        self._groups = groups
        self.key = key
        self._view = view
        #: Every member has been sent every change up to this revision.
        self.position = view.cursor
        #: Each member's future: the revision to resume from when it leaves, None if
        #: the state ended.
        self._members: dict[Subscription, asyncio.Future[int | None]] = {}
        self._closed = False
        self._task = asyncio.ensure_future(self._run())

    @property
    def ended(self) -> bool:
        return self._closed or self._view.frozen

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: Subscription) -> None:
        self._members[member] = asyncio.get_running_loop().create_future()

    async def hold(self, member: Subscription) -> int | None:
        """Sleep while ``member`` is in the group: when it leaves, where to resume from."""
        left = self._members[member]
        try:
            return await left
        finally:
            if self._members.get(member) is left:  # cancelled: unsubscribed or closed
                del self._members[member]
                if not self._members:
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
        """End the group: members still in it end too (the state ended)."""
        if self._closed:
            return
        self._closed = True
        self._groups.forget(self)
        for left in self._members.values():
            if not left.done():
                left.set_result(None)
        self._members.clear()
        self._task.cancel()
        self._groups.views.remove_view(self._view)

    async def _run(self) -> None:
        try:
            while True:
                self._deliver(await self._view.flush_changed_async(copy=False))
        except ObjectFrozenError:
            self.close()
        except Exception:  # a bug: end the members' subscriptions rather than stall them
            logger.exception("fan-out group %r failed; its subscriptions end", self.key)
            self.close()

    def _deliver(self, change: DictionaryChange) -> None:
        """Encode the change once; queue it to every member that keeps up."""
        revision = self._view.cursor
        hub = self._groups.hub
        budget = hub.max_message_bytes - FRAME_HEADER_BYTES
        bodies = change_batch_bodies(revision, False, change.updates, change.removals, budget)
        resume_from, covered = self.position, revision - self.position
        self.position = revision
        lag_limit = min(LAG_BYTES, hub.limits.max_queued_bytes)
        delivered = hub.observer.delivered
        for member, left in list(self._members.items()):
            if left.done():
                continue  # cancelled (unsubscribed, closed): its task is about to leave
            outbox = member.outbox
            if outbox.queued_bytes > lag_limit:
                del self._members[member]
                left.set_result(resume_from)  # alone from there: coalesced, no gap
                continue
            header = member.header
            for body in bodies:
                outbox.push(header + body)
            delivered(covered)
        if not self._members:
            self.close()


class FanoutGroups:
    """The fan-out groups of one hub, by what their members see."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.views = hub.state.views
        self._groups: dict[GroupKey, FanoutGroup] = {}

    def join(self, member: Subscription, view: DictionaryChangeBuffer) -> FanoutGroup | None:
        """Put ``member`` (alone, delivering from ``view``) in its group if it can be.

        It can if its view is caught up and the group, once it has sent its members what
        is pending, stands at the same revision: both have then shown everything up to it.
        """
        with self.views.lock:  # no change comes in while the two positions are compared
            if not view.caught_up():
                return None
            key = (member.prefix, member.readable)
            group = self._groups.get(key)
            if group is not None:
                group.deliver_pending()  # which may end it: its members all fell behind
            if group is None or group.ended:
                views = self.views
                group_view = views.open_view(views.revision, member.prefix, member.key_filter)
                group = self._groups[key] = FanoutGroup(self, key, group_view)
            if group.position != view.cursor:
                if not len(group):
                    group.close()
                return None
            group.add(member)
            return group

    def forget(self, group: FanoutGroup) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]

    def sizes(self) -> dict[GroupKey, int]:
        """Members per group, by prefix and readable keys (``/metrics``, tests)."""
        return {key: len(group) for key, group in self._groups.items()}


def _flush_now(view: DictionaryChangeBuffer) -> DictionaryChange:
    """What the view holds right now, possibly nothing (a subscription's first batch)."""
    try:
        return view.flush_changed_blocking(timeout=0, copy=False)
    except TimeoutError:
        return DictionaryChange()
