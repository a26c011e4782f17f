import asyncio
import itertools
import math
import threading
import time

import pytest

from statehub import (
    DictionaryChange,
    DictionaryChangeBuffer,
    DictionaryChangeMultiView,
    ObjectFrozenError,
)


def test_last_value_wins() -> None:
    buffer = DictionaryChangeBuffer()
    buffer.update({"a": 1, "b": 1})
    buffer.update({"a": 2})
    assert buffer.flush_changed_blocking() == DictionaryChange({"a": 2, "b": 1})


def test_removal_cancels_pending_value_and_value_cancels_pending_removal() -> None:
    buffer = DictionaryChangeBuffer()
    buffer.update({"a": 1})
    buffer.update(removals=["a"])
    buffer.update(removals=["b"])
    buffer.update({"b": 2})
    assert buffer.flush_changed_blocking() == DictionaryChange({"b": 2}, {"a"})


def test_key_both_updated_and_removed_in_one_change_is_removed() -> None:
    buffer = DictionaryChangeBuffer()
    buffer.update({"a": 1}, ["a"])
    assert buffer.flush_changed_blocking() == DictionaryChange(removals={"a"})


def test_flush_clears() -> None:
    buffer = DictionaryChangeBuffer()
    buffer.update({"a": 1})
    buffer.flush_changed_blocking()
    with pytest.raises(TimeoutError):
        buffer.flush_changed_blocking(timeout=0.01)


def test_empty_change_never_wakes_a_flush() -> None:
    buffer = DictionaryChangeBuffer()
    buffer.update({}, [])
    with pytest.raises(TimeoutError):
        buffer.flush_changed_blocking(timeout=0.01)


def test_flush_blocks_until_another_thread_updates() -> None:
    buffer = DictionaryChangeBuffer()
    flushed: list[DictionaryChange] = []
    waiting = threading.Thread(target=lambda: flushed.append(buffer.flush_changed_blocking()))
    waiting.start()
    buffer.update({"a": 1})
    waiting.join(timeout=5)
    assert flushed == [DictionaryChange({"a": 1})]


def test_frozen_buffer_flushes_what_it_held_once_then_raises() -> None:
    buffer = DictionaryChangeBuffer()
    buffer.update({"a": 1})
    buffer.freeze()
    with pytest.raises(ObjectFrozenError):
        buffer.update({"b": 2})
    assert buffer.flush_changed_blocking() == DictionaryChange({"a": 1})
    with pytest.raises(ObjectFrozenError):
        buffer.flush_changed_blocking()


def test_freeze_wakes_a_blocked_flush() -> None:
    buffer = DictionaryChangeBuffer()
    errors: list[BaseException] = []

    def flush() -> None:
        try:
            buffer.flush_changed_blocking()
        except ObjectFrozenError as error:
            errors.append(error)

    waiting = threading.Thread(target=flush)
    waiting.start()
    buffer.freeze()
    waiting.join(timeout=5)
    assert len(errors) == 1


def test_bad_value_in_buffer_update_changes_nothing() -> None:
    buffer = DictionaryChangeBuffer()
    with pytest.raises(TypeError, match="key 'b'"):
        buffer.update({"a": 1, "b": {1, 2}})
    with pytest.raises(TimeoutError):
        buffer.flush_changed_blocking(timeout=0.01)


def test_interval_pacing_spaces_flushes_and_coalesces() -> None:
    buffer = DictionaryChangeBuffer()
    interval = 0.05
    buffer.update({"n": 0})
    stream = buffer.subscribe_changes(interval)
    started = time.monotonic()
    first = next(stream)
    first_at = time.monotonic()
    assert first.updates == {"n": 0}
    assert first_at - started < interval  # the first flush is immediate
    for n in range(1, 50):
        buffer.update({"n": n})
    second = next(stream)
    assert time.monotonic() - first_at >= interval
    assert second.updates == {"n": 49}


def test_no_catch_up_burst_after_idle() -> None:
    buffer = DictionaryChangeBuffer()
    interval = 0.05
    stream = buffer.subscribe_changes(interval)
    buffer.update({"n": 0})
    next(stream)
    time.sleep(4 * interval)  # an idle period of several intervals
    times = []
    for n in range(1, 4):
        buffer.update({"n": n})
        next(stream)
        times.append(time.monotonic())
        buffer.update({"n": n + 100})  # keep something pending at every due time
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= interval * 0.95 for gap in gaps), gaps


def test_subscribe_changes_ends_when_frozen() -> None:
    buffer = DictionaryChangeBuffer()
    buffer.update({"a": 1})
    buffer.freeze()
    assert list(buffer.subscribe_changes()) == [DictionaryChange({"a": 1})]


@pytest.mark.parametrize("interval", [-1, math.inf, math.nan, "1"])
def test_bad_interval_is_refused(interval: object) -> None:
    with pytest.raises(ValueError, match="interval must be a finite number of seconds >= 0"):
        next(DictionaryChangeBuffer().subscribe_changes(interval))  # type: ignore[arg-type]


async def test_async_flush_is_woken_by_a_thread_writer() -> None:
    buffer = DictionaryChangeBuffer()
    waiting = asyncio.create_task(buffer.flush_changed_async())
    await asyncio.sleep(0)
    await asyncio.to_thread(buffer.update, {"a": 1})
    assert await asyncio.wait_for(waiting, 5) == DictionaryChange({"a": 1})


async def test_cancelling_one_async_waiter_does_not_disturb_another() -> None:
    buffer = DictionaryChangeBuffer()
    multiview = DictionaryChangeMultiView()
    with multiview.create_view() as first, multiview.create_view() as second:
        cancelled = asyncio.create_task(first.flush_changed_async())
        survivor = asyncio.create_task(second.flush_changed_async())
        await asyncio.sleep(0)
        cancelled.cancel()
        multiview.update({"a": 1})
        assert await asyncio.wait_for(survivor, 5) == DictionaryChange({"a": 1})
    assert cancelled.cancelled()
    buffer.freeze()


async def test_async_subscription_paces_and_ends_on_freeze() -> None:
    multiview = DictionaryChangeMultiView()
    multiview.update({"a": 1})
    received: list[DictionaryChange] = []

    async def consume() -> None:
        async for change in multiview.subscribe_changes_async(0.02):
            received.append(change)
            if len(received) == 1:
                multiview.update({"a": 2})
                multiview.update({"a": 3})
                multiview.freeze()

    await asyncio.wait_for(consume(), 5)
    assert received == [DictionaryChange({"a": 1}), DictionaryChange({"a": 3})]


def test_view_starts_with_whole_content_then_deltas() -> None:
    multiview = DictionaryChangeMultiView()
    multiview.update({"a": 1, "b": 2})
    with multiview.create_view() as view:
        assert view.flush_changed_blocking() == DictionaryChange({"a": 1, "b": 2})
        multiview.update({"a": 5}, ["b"])
        assert view.flush_changed_blocking() == DictionaryChange({"a": 5}, {"b"})


def test_views_are_independent() -> None:
    multiview = DictionaryChangeMultiView()
    with multiview.create_view() as fast, multiview.create_view() as slow:
        multiview.update({"a": 1})
        assert fast.flush_changed_blocking() == DictionaryChange({"a": 1})
        multiview.update({"a": 2})
        multiview.update(removals=["a"])
        multiview.update({"a": 3})
        assert fast.flush_changed_blocking() == DictionaryChange({"a": 3})
        assert slow.flush_changed_blocking() == DictionaryChange({"a": 3})


def test_remove_view_freezes_it() -> None:
    multiview = DictionaryChangeMultiView()
    with multiview.create_view() as view:
        multiview.remove_view(view)
        multiview.update({"a": 1})
        with pytest.raises(ObjectFrozenError):
            view.flush_changed_blocking()


def test_view_created_after_freeze_yields_final_content_once() -> None:
    multiview = DictionaryChangeMultiView()
    multiview.update({"a": 1})
    multiview.freeze()
    with pytest.raises(ObjectFrozenError):
        multiview.update({"a": 2})
    assert list(multiview.subscribe_changes()) == [DictionaryChange({"a": 1})]


def test_copy_content() -> None:
    multiview = DictionaryChangeMultiView()
    multiview.update({"a": [1]})
    copy = multiview.copy_content()
    copy["a"].append(2)
    assert multiview.copy_content() == {"a": [1]}


def test_view_since_a_revision_gets_only_the_delta() -> None:
    multiview = DictionaryChangeMultiView()
    multiview.update({"a": 1, "b": 1})
    seen = multiview.revision
    multiview.update({"a": 2}, ["b"])
    with multiview.create_view(since=seen) as view:
        assert not view.starts_with_snapshot
        assert view.flush_changed_blocking() == DictionaryChange({"a": 2}, {"b"})


def test_view_since_a_forgotten_revision_gets_a_snapshot() -> None:
    multiview = DictionaryChangeMultiView(log_length=2)
    for n in range(1100):  # enough removals to prune tombstones past the log
        multiview.update({f"k{n}": n})
        multiview.update(removals=[f"k{n}"])
    multiview.update({"z": 1})
    with multiview.create_view(since=1) as view:
        assert view.starts_with_snapshot
        assert view.flush_changed_blocking() == DictionaryChange({"z": 1})


def test_lagging_view_behind_the_log_still_sees_removals() -> None:
    multiview = DictionaryChangeMultiView(log_length=4)
    multiview.update({"gone": 1, "kept": 1})
    with multiview.create_view() as view:
        view.flush_changed_blocking()
        multiview.update(removals=["gone"])
        for n in range(20):
            multiview.update({"kept": n})
        assert view.flush_changed_blocking() == DictionaryChange({"kept": 19}, {"gone"})


def test_a_prefix_view_sees_only_its_keys_and_is_not_woken_by_others() -> None:
    multiview = DictionaryChangeMultiView()
    multiview.update({"avatar.1": 1, "scene": "a"})
    with multiview.create_view(prefix="avatar.") as view:
        assert view.flush_changed_blocking() == DictionaryChange({"avatar.1": 1})
        multiview.update({"scene": "b"}, ["other"])
        with pytest.raises(TimeoutError):
            view.flush_changed_blocking(timeout=0.01)
        multiview.update({"avatar.2": 2, "scene": "c"}, ["avatar.1"])
        assert view.flush_changed_blocking() == DictionaryChange({"avatar.2": 2}, {"avatar.1"})


def test_a_prefix_view_since_a_revision_gets_only_its_keys() -> None:
    multiview = DictionaryChangeMultiView()
    multiview.update({"avatar.1": 1, "scene": "a"})
    seen = multiview.revision
    multiview.update({"avatar.1": 2, "scene": "b"})
    with multiview.create_view(since=seen, prefix="avatar.") as view:
        assert view.flush_changed_blocking() == DictionaryChange({"avatar.1": 2})
