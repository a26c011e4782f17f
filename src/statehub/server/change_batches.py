"""A subscription's change batch, encoded in pieces that each fit in one frame.

A small batch is encoded in one call. A large one (a snapshot of a big state, say) is
encoded key by key into pieces of at most ``budget`` bytes, handing the event loop back
every few thousand keys so that other clients are served meanwhile. Only the first piece
of a snapshot says ``snapshot: true``; the client applies the rest as deltas on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping

from statehub.core.values import JsonValue
from statehub.protocol.codec import array_header, encode_value, map_header

#: Batches with at most this many keys are encoded whole (one C call), if they fit.
WHOLE_BATCH_KEYS = 1_000
#: Keys encoded between two returns to the event loop when a batch is built piecewise.
KEYS_PER_SLICE = 2_000
#: Room for a piece's own fields (sub, revision, snapshot and the container headers).
PIECE_OVERHEAD_BYTES = 96


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
    if len(updates) + len(removals) <= WHOLE_BATCH_KEYS:
        whole = encode_value(
            {
                "sub": sub,
                "revision": revision,
                "snapshot": snapshot,
                "updates": updates,
                "removals": sorted(removals),
            }
        )
        if len(whole) <= budget:
            yield whole
            return
    builder = _PieceBuilder(sub, revision, snapshot, budget - PIECE_OVERHEAD_BYTES)
    for count, (key, value) in enumerate(updates.items(), 1):
        if piece := builder.add(encode_value(key) + encode_value(value), removal=False):
            yield piece
        if count % KEYS_PER_SLICE == 0:
            await asyncio.sleep(0)
    for key in sorted(removals):
        if piece := builder.add(encode_value(key), removal=True):
            yield piece
    yield builder.finish()


class _PieceBuilder:
    """Accumulates encoded entries; hands back a finished piece when the next won't fit."""

    def __init__(self, sub: int, revision: int, snapshot: bool, budget: int) -> None:
        self._sub = sub
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
        piece = b"".join(
            (
                map_header(5),
                encode_value("sub"),
                encode_value(self._sub),
                encode_value("revision"),
                encode_value(self._revision),
                encode_value("snapshot"),
                encode_value(self._snapshot),
                encode_value("updates"),
                map_header(len(self._updates)),
                *self._updates,
                encode_value("removals"),
                array_header(len(self._removals)),
                *self._removals,
            )
        )
        self._snapshot = False  # later pieces add to what the first one replaced
        self._updates, self._removals, self._size = [], [], 0
        return piece
