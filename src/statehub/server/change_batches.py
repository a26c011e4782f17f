"""A subscription's change batch, encoded in pieces that each fit in one frame.

A batch message is the map ``{sub, revision, snapshot, updates, removals}``. Only ``sub``
differs between subscribers that receive the same change, so a piece is encoded as two
parts: ``batch_header(sub)`` (the map's header and the ``sub`` entry) and a body holding
the other four entries. A fan-out group (``subscriptions.py``) encodes the body once and
sends ``header + body`` to each of its members; msgpack allows this because a map's
entries simply follow its header.

A small batch is encoded in one call. A large one (a snapshot of a big state, say) is
encoded key by key into pieces of at most ``budget`` bytes; the async form hands the
event loop back every few thousand keys so that other clients are served meanwhile.
Only the first piece of a snapshot says ``snapshot: true``; the client applies the rest
as deltas on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterator, Mapping

from statehub.core.values import JsonValue
from statehub.protocol.codec import array_header, encode_value, map_header

#: Batches with at most this many keys are encoded whole (one C call), if they fit.
WHOLE_BATCH_KEYS = 1_000
#: Keys encoded between two returns to the event loop when a batch is built piecewise.
KEYS_PER_SLICE = 2_000
#: Room for a piece's own fields (sub, revision, snapshot and the container headers).
PIECE_OVERHEAD_BYTES = 96

_SUB = encode_value("sub")
_REVISION = encode_value("revision")
#: The ``snapshot`` entry, indexed by its value.
_SNAPSHOT = tuple(encode_value("snapshot") + encode_value(flag) for flag in (False, True))
_UPDATES = encode_value("updates")
_REMOVALS = encode_value("removals")


def batch_header(sub: int) -> bytes:
    """What goes in front of a body for subscription ``sub``: the message is then whole."""
    return map_header(5) + _SUB + encode_value(sub)


async def change_batch_pieces(
    sub: int,
    revision: int,
    snapshot: bool,
    updates: Mapping[str, JsonValue],
    removals: Collection[str],
    budget: int,
) -> AsyncIterator[bytes]:
    """Encoded change-batch messages for ``sub``, each at most ``budget`` bytes if it can be.

    A single key whose value alone is over the budget still travels, alone in its piece.
    """
    header = batch_header(sub)
    for body in _bodies(revision, snapshot, updates, removals, budget - len(header)):
        if body is None:
            await asyncio.sleep(0)
        else:
            yield header + body


def change_batch_bodies(
    revision: int,
    snapshot: bool,
    updates: Mapping[str, JsonValue],
    removals: Collection[str],
    budget: int,
) -> list[bytes]:
    """The bodies of a batch's pieces, to follow any subscriber's ``batch_header``.

    Encoded in one go, without handing the loop back: for a batch shared by many
    subscribers, where the encoding happens once rather than once per subscriber.
    """
    header_room = len(batch_header(2**64 - 1))
    return [
        body
        for body in _bodies(revision, snapshot, updates, removals, budget - header_room)
        if body is not None
    ]


def _bodies(
    revision: int,
    snapshot: bool,
    updates: Mapping[str, JsonValue],
    removals: Collection[str],
    budget: int,
) -> Iterator[bytes | None]:
    """Bodies of pieces of at most ``budget`` bytes; None where the loop may be handed back."""
    if len(updates) + len(removals) <= WHOLE_BATCH_KEYS:
        whole = b"".join(
            (
                _REVISION,
                encode_value(revision),
                _SNAPSHOT[snapshot],
                _UPDATES,
                encode_value(updates),
                _REMOVALS,
                encode_value(sorted(removals)),
            )
        )
        if len(whole) <= budget:
            yield whole
            return
    builder = _PieceBuilder(revision, snapshot, budget - PIECE_OVERHEAD_BYTES)
    for count, (key, value) in enumerate(updates.items(), 1):
        if piece := builder.add(encode_value(key) + encode_value(value), removal=False):
            yield piece
        if count % KEYS_PER_SLICE == 0:
            yield None
    for key in sorted(removals):
        if piece := builder.add(encode_value(key), removal=True):
            yield piece
    yield builder.finish()


class _PieceBuilder:
    """Accumulates encoded entries; hands back a finished body when the next won't fit."""

    def __init__(self, revision: int, snapshot: bool, budget: int) -> None:
        self._revision = revision
        self._snapshot = snapshot
        self._budget = budget
        self._updates: list[bytes] = []
        self._removals: list[bytes] = []
        self._size = 0

    def add(self, entry: bytes, *, removal: bool) -> bytes | None:
        finished = None
        if self._size and self._size + len(entry) > self._budget:
            finished = self.finish()
        (self._removals if removal else self._updates).append(entry)
        self._size += len(entry)
        return finished

    def finish(self) -> bytes:
        body = b"".join(
            (
                _REVISION,
                encode_value(self._revision),
                _SNAPSHOT[self._snapshot],
                _UPDATES,
                map_header(len(self._updates)),
                *self._updates,
                _REMOVALS,
                array_header(len(self._removals)),
                *self._removals,
            )
        )
        self._snapshot = False  # later pieces add to what the first one replaced
        self._updates, self._removals, self._size = [], [], 0
        return body
