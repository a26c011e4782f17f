"""A history checker for statehub runs with faults, in the manner of etcd's robustness tests.

Workers record every operation they invoke with its invocation and response times
(``time.monotonic``) and its outcome; watchers record every batch they receive. After
the run, ``check`` looks for violations of what statehub promises and returns them as
sentences (an empty list: the history is consistent). Written values are unique, so a
value read or watched names the write that made it.

What is checked, and how:

- **Linearizability per key.** statehub orders every change by its revision, so a
  history is linearizable per key if that order agrees with real time: an operation
  that completed before another began has a position no greater (reads) or smaller
  (writes) than it. A write's position is the revision it was acknowledged with; a
  read's is the revision of the value it returned (``mod_revision``). Writes are
  checked across all servers (one Redis script orders them). Reads are checked against
  the writes and reads made through the same server (``Operation.server``): a server
  answers reads from its own copy, which may trail another server's writes by the
  follow latency (docs/redis.md), but never its own acknowledged writes or earlier
  reads. A read must also return the value of the write with that revision, written by
  a write invoked before the read completed (nothing from the future). Writes whose
  outcome is unknown (the connection dropped) may or may not have happened; they
  constrain nothing, but a read may name them.
- **Watch ordering and completeness.** A watcher's batch revisions only grow, within
  one epoch; each delta ``(previous, revision]`` holds every key that an acknowledged
  write changed in that range (a gap would miss one), including across reconnects (the
  client resumes with the revision and epoch it saw); a snapshot holds, for each key,
  a value no older than the last acknowledged write at or below its revision.
- **No lease intrusion.** No write of another client was acknowledged wholly inside
  a lease hold (from the lease's acknowledgement to its release), unless the holder was
  told it lost the lease (``leases_lost``) meanwhile.
- **Lock holds.** Two exclusive holds of one key that overlap in time are allowed only
  when the earlier holder was told it lost the lock (it was swept, or its connection
  dropped) and the later one has the larger fencing token; fencing tokens grow in the
  order holds began.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

#: An operation's outcome: done, refused (it surely did not happen), or unknown.
OK, FAILED, UNKNOWN = "ok", "failed", "unknown"


@dataclass(slots=True)
class Operation:
    """One write (``value`` set) or read (``value`` returned) of ``key``."""

    client: str
    kind: str  # "write" or "read"
    key: str
    value: Any
    invoked: float
    completed: float = float("inf")
    outcome: str = UNKNOWN
    #: The write's acknowledged revision, or the revision of the value a read returned
    #: (None: the key did not exist, or the outcome is not known).
    revision: int | None = None
    epoch: str = ""
    #: The server it went through (reads are linearizable against that server's writes).
    server: str = ""


@dataclass(slots=True)
class Batch:
    """One batch a watcher received."""

    watcher: str
    revision: int
    snapshot: bool
    updates: dict[str, Any]
    removals: list[str]
    epoch: str
    received: float


@dataclass(slots=True)
class Hold:
    """A lease or an exclusive lock held by ``client`` on ``key`` from ``start`` (its
    acknowledgement) to ``end`` (when its release was invoked)."""

    client: str
    key: str
    start: float
    end: float = float("inf")
    fence: int | None = None
    #: When the holder was told it lost it (None: never).
    lost_at: float | None = None


@dataclass
class History:
    """Everything a run recorded."""

    operations: list[Operation] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    leases: list[Hold] = field(default_factory=list)
    locks: list[Hold] = field(default_factory=list)


def check(history: History) -> list[str]:
    """Every violation found in ``history``, as a sentence naming what and where."""
    return [
        *check_linearizable(history.operations),
        *check_watches(history.batches, history.operations),
        *check_no_lease_intrusion(history.leases, history.operations),
        *check_lock_holds(history.locks),
    ]


def check_linearizable(operations: list[Operation]) -> list[str]:
    problems: list[str] = []
    writes_by_value = {(op.key, _hashable(op.value)): op for op in operations if op.kind == "write"}
    #: (epoch, key, server or None for the writes of every server) -> operations
    by_key: dict[tuple[str, str, str | None], list[Operation]] = defaultdict(list)
    for op in operations:
        if op.outcome != OK:
            continue
        if op.kind == "read" and op.value is not None:
            write = writes_by_value.get((op.key, _hashable(op.value)))
            if write is None:
                problems.append(f"{_name(op)} returned {op.value!r}, which nobody wrote")
                continue
            if write.invoked > op.completed:
                problems.append(f"{_name(op)} returned the value of {_name(write)}, invoked after")
            if write.outcome == FAILED:
                problems.append(f"{_name(op)} returned the value of refused {_name(write)}")
            if write.outcome == OK and write.revision != op.revision:
                problems.append(
                    f"{_name(op)} returned {op.value!r} at revision {op.revision}, but "
                    f"{_name(write)} was acknowledged with revision {write.revision}"
                )
        if op.kind == "write":
            by_key[(op.epoch, op.key, None)].append(op)
        by_key[(op.epoch, op.key, op.server)].append(op)
    for (_, _, server), ops in by_key.items():
        # Write against write once (all servers); per server only what involves a read.
        problems += _real_time_order(ops, reads_only=server is not None)
    return problems


def _real_time_order(ops: list[Operation], *, reads_only: bool) -> list[str]:
    """Each operation against the one of highest position among those that completed
    before it began (operations sorted by completion, with a running maximum)."""
    problems: list[str] = []
    done = sorted(ops, key=lambda op: op.completed)
    completions = [op.completed for op in done]
    highest_so_far: list[Operation] = []
    for op in done:
        best = highest_so_far[-1] if highest_so_far else None
        highest_so_far.append(op if best is None or _position(op) > _position(best) else best)
    for later in ops:
        count = bisect.bisect_left(completions, later.invoked)
        if count == 0:
            continue
        highest = highest_so_far[count - 1]
        if reads_only and later.kind == "write" and highest.kind == "write":
            continue
        before, after = _position(highest), _position(later)
        # A write must come strictly after anything finished before it; a read may see
        # the very version an earlier operation wrote or read.
        if after < before or (later.kind == "write" and after == before):
            problems.append(
                f"{_name(later)} is at revision {after}, but {_name(highest)} completed "
                f"before it began at revision {before}: not linearizable"
            )
    return problems


def check_watches(batches: list[Batch], operations: list[Operation]) -> list[str]:
    problems: list[str] = []
    known = sorted(
        (op for op in operations if op.kind == "write" and op.outcome == OK),
        key=lambda op: op.revision or 0,
    )
    known_revisions = [op.revision or 0 for op in known]
    by_watcher: dict[str, list[Batch]] = defaultdict(list)
    for batch in batches:
        by_watcher[batch.watcher].append(batch)
    for watcher, seen in by_watcher.items():
        previous: Batch | None = None
        for batch in seen:
            same_history = previous is not None and previous.epoch == batch.epoch
            if same_history and previous is not None and batch.revision < previous.revision:
                problems.append(
                    f"watcher {watcher}: revision {batch.revision} after {previous.revision}"
                )
            if batch.snapshot:
                problems += _check_snapshot(watcher, batch, known)
            elif not same_history or previous is None:
                problems.append(
                    f"watcher {watcher}: a delta at revision {batch.revision} with no "
                    "snapshot of that epoch before it"
                )
            else:
                changed = set(batch.updates) | set(batch.removals)
                first = bisect.bisect_right(known_revisions, previous.revision)
                last = bisect.bisect_right(known_revisions, batch.revision)
                for op in known[first:last]:
                    if op.epoch == batch.epoch and op.key not in changed:
                        problems.append(
                            f"watcher {watcher}: the delta ({previous.revision}, "
                            f"{batch.revision}] misses {_name(op)} (revision {op.revision}): "
                            "a gap"
                        )
            previous = batch
    return problems


def _check_snapshot(watcher: str, batch: Batch, known: list[Operation]) -> list[str]:
    revision_of = {(op.key, _hashable(op.value)): op.revision or 0 for op in known}
    latest: dict[str, Operation] = {}
    for op in known:
        if op.epoch == batch.epoch and (op.revision or 0) <= batch.revision:
            latest[op.key] = op
    problems = []
    for key, op in latest.items():
        if key not in batch.updates:
            problems.append(
                f"watcher {watcher}: the snapshot at revision {batch.revision} lacks {key!r} "
                f"({_name(op)} wrote it at revision {op.revision})"
            )
            continue
        shown = revision_of.get((key, _hashable(batch.updates[key])))
        if shown is not None and shown < (op.revision or 0):
            problems.append(
                f"watcher {watcher}: the snapshot at revision {batch.revision} shows {key!r} "
                f"from revision {shown}, older than {_name(op)} at {op.revision}"
            )
    return problems


def check_no_lease_intrusion(leases: list[Hold], operations: list[Operation]) -> list[str]:
    problems = []
    for hold in leases:
        trusted_until = hold.end if hold.lost_at is None else min(hold.end, hold.lost_at)
        for op in operations:
            if op.kind != "write" or op.outcome != OK or op.key != hold.key:
                continue
            if (
                op.client != hold.client
                and hold.start < op.invoked
                and op.completed < trusted_until
            ):
                problems.append(
                    f"{_name(op)} was acknowledged inside {hold.client}'s lease on "
                    f"{hold.key!r} ({hold.start:.3f} to {trusted_until:.3f}): an intrusion"
                )
    return problems


def check_lock_holds(locks: list[Hold]) -> list[str]:
    problems = []
    by_key: dict[str, list[Hold]] = defaultdict(list)
    for hold in locks:
        by_key[hold.key].append(hold)
    for key, holds in by_key.items():
        holds.sort(key=lambda hold: hold.start)
        for index, earlier in enumerate(holds):
            for later in holds[index + 1 :]:
                if (
                    earlier.fence is not None
                    and later.fence is not None
                    and later.fence <= earlier.fence
                ):
                    problems.append(
                        f"lock {key!r}: {later.client}'s hold (fence {later.fence}) began "
                        f"after {earlier.client}'s (fence {earlier.fence}): fences must grow"
                    )
                if later.start >= earlier.end:
                    continue
                told = earlier.lost_at is not None and earlier.lost_at <= earlier.end
                if not told:
                    problems.append(
                        f"lock {key!r}: {earlier.client} ({earlier.start:.3f} to "
                        f"{earlier.end:.3f}) and {later.client} (from {later.start:.3f}) held "
                        f"it at once, and {earlier.client} was never told it lost it"
                    )
    return problems


def _position(op: Operation) -> int:
    return op.revision or 0


def _name(op: Operation) -> str:
    when = f"[{op.invoked:.3f}, {op.completed:.3f}]"
    return f"{op.kind} of {op.key!r}={op.value!r} by {op.client} {when}"


def _hashable(value: Any) -> Any:
    return repr(value)
