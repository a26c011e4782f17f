"""The client's change buffer: an empty delta (a resume that found nothing) is no change."""

from __future__ import annotations

import asyncio

from statehub.client.changes import CoalescingBuffer


async def test_an_empty_delta_wakes_no_reader_but_moves_the_revision() -> None:
    buffer = CoalescingBuffer()
    buffer.push({"revision": 4, "snapshot": False, "updates": {}, "removals": []})
    reader = asyncio.ensure_future(buffer.take())
    await asyncio.sleep(0)  # let the reader start waiting
    assert not reader.done()
    buffer.push({"revision": 5, "snapshot": False, "updates": {"k": 1}, "removals": []})
    change = await asyncio.wait_for(reader, 10)
    assert change is not None and (change.revision, change.updates) == (5, {"k": 1})


async def test_an_empty_snapshot_is_still_a_change() -> None:
    buffer = CoalescingBuffer()
    buffer.push({"revision": 7, "snapshot": True, "updates": {}, "removals": []})
    change = await asyncio.wait_for(buffer.take(), 10)
    assert change is not None and change.snapshot and change.updates == {}
