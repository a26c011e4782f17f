"""In-process core workloads: writes with views attached, leases, coalesced flushes."""

from __future__ import annotations

import time
from contextlib import ExitStack

from statehub.bench.table import Result
from statehub.core.change import DictionaryChange
from statehub.store.state_dictionary import StateDictionary

WRITES = 200_000
LEASES = 100_000
KEYS = 100


def run() -> list[Result]:
    results = [_writes_with_views(views) for views in (0, 10, 100)]
    results.append(_compare_and_set_writes())
    results.append(_lease_cycles())
    results.append(_coalesced_flush())
    return results


def _writes_with_views(view_count: int) -> Result:
    state = StateDictionary()
    changes = [DictionaryChange({f"key{i % KEYS}": i}) for i in range(WRITES)]
    with ExitStack() as stack:
        views = [stack.enter_context(state.get_change_buffer()) for _ in range(view_count)]
        started = time.perf_counter()
        for change in changes:
            state.update_state("writer", change)
        elapsed = time.perf_counter() - started
        for view in views:  # every view still sees the coalesced result
            assert len(view.flush_changed_blocking().updates) == KEYS
    return Result(
        f"update_state, 1 key, {view_count} views attached", WRITES / elapsed, "changes/s"
    )


def _compare_and_set_writes() -> Result:
    """The first workload with every write guarded by the revision the writer last saw
    (issue 22's goal: within 10 % of plain writes)."""
    state = StateDictionary()
    changes = [DictionaryChange({f"key{i % KEYS}": i}) for i in range(WRITES)]
    seen: dict[str, int | None] = {f"key{i}": None for i in range(KEYS)}
    started = time.perf_counter()
    for i, change in enumerate(changes):
        key = f"key{i % KEYS}"
        seen[key] = state.update_state("writer", change, expect={key: seen[key]})
    elapsed = time.perf_counter() - started
    return Result(
        "update_state with compare-and-set, 1 key, 0 views", WRITES / elapsed, "changes/s"
    )


def _lease_cycles() -> Result:
    state = StateDictionary()
    started = time.perf_counter()
    for i in range(LEASES):
        key = f"key{i % KEYS}"
        state.update_locks("owner", acquire={key: 1.0})
        state.update_locks("owner", release=[key])
    elapsed = time.perf_counter() - started
    return Result("lease acquire + release", LEASES / elapsed, "cycles/s")


def _coalesced_flush() -> Result:
    """1,000 writes over 100 keys between flushes: how many such flushes per second."""
    state = StateDictionary()
    rounds = 200
    with state.get_change_buffer() as view:
        started = time.perf_counter()
        for round_ in range(rounds):
            for i in range(1_000):
                state.update_state("writer", DictionaryChange({f"key{i % KEYS}": round_}))
            assert len(view.flush_changed_blocking().updates) == KEYS
        elapsed = time.perf_counter() - started
    return Result("1,000 writes coalesced into one 100-key flush", rounds / elapsed, "flushes/s")
