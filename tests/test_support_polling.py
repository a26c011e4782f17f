"""The tests' one poll helper (tests/support/polling.py): what it returns, and what a
timeout says."""

from __future__ import annotations

import asyncio

import pytest

from support.polling import eventually, eventually_sync


async def test_eventually_returns_the_first_true_result_of_a_plain_or_async_check() -> None:
    calls: list[int] = []

    def third_time() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) == 3 else None

    async def answered() -> str:
        await asyncio.sleep(0)
        return "yes"

    assert await eventually(third_time, interval=0) == 3
    assert await eventually(answered) == "yes"


async def test_a_timeout_names_the_awaited_condition_by_its_source() -> None:
    nothing: list[int] = []
    with pytest.raises(AssertionError, match=r"not within 0.05 s: .*lambda: len\(nothing\) == 1"):
        await eventually(lambda: len(nothing) == 1, timeout=0.05)


def test_the_blocking_form_names_what_was_awaited_and_the_last_result() -> None:
    with pytest.raises(AssertionError, match=r"not within 0.05 s: the door open \(last .* 0\)"):
        eventually_sync(lambda: 0, "the door open", timeout=0.05)
    assert eventually_sync(lambda: "open", "the door open") == "open"
