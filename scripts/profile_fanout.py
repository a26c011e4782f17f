"""Profile the statehub server under the 100-subscriber fan-out workload (py-spy).

Usage: .venv/bin/python scripts/profile_fanout.py grpc|tcp [seconds]  (py-spy: pip install py-spy)

Starts the bench's server process and 100 subscribers at interval 0 (their own
process), keeps one client writing with 64 writes in flight, and records the server with
``py-spy record --format raw`` (folded stacks, native frames included). It prints the
share of samples by where the innermost interesting frame lives, and leaves the folded
stacks in ``profile-<transport>.txt`` (``py-spy record -o x.svg`` makes a flame graph).
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
from pathlib import Path

from statehub.bench import fanout

#: Frames are charged to the first of these found walking from the innermost frame out.
BUCKETS = (
    ("msgpack", "msgpack (encode/decode)"),
    ("cygrpc", "grpc.aio (Cython core, poller, callbacks)"),
    ("grpc", "grpc.aio (Cython core, poller, callbacks)"),
    ("statehub/server/outbox", "statehub: outbox (framing, queueing)"),
    ("statehub/server/change_batches", "statehub: change batches (encoding)"),
    ("statehub/server/subscriptions", "statehub: subscriptions (fan-out groups, alone)"),
    ("statehub/server/session", "statehub: session (dispatch, subscriptions)"),
    ("statehub/core", "statehub: core (state, buffers, notifier)"),
    ("statehub/server/tcp_transport", "statehub: TCP adapter"),
    ("statehub/server/transport", "statehub: serve_session loop"),
    ("asyncio/selector_events", "asyncio: socket reads/writes (selector transport)"),
    ("asyncio/streams", "asyncio: streams"),
    ("asyncio", "asyncio: event loop (scheduling, callbacks)"),
)


#: Innermost frames of a thread that is waiting, not running.
IDLE = ("epoll_wait", "poll (libc", "select (libc", "futex", "pthread_cond", "sem_wait")
#: Frames naming the coroutine a task was running (the second view: "by task").
TASKS = (
    ("_run (statehub/server/subscriptions", "fan-out group tasks (catch up, encode once, queue)"),
    ("statehub/server/subscriptions", "subscription tasks alone (flush, encode, queue)"),
    ("serve_session", "session writer loops (outbox -> transport write)"),
    ("_feed", "session reader loops (transport read -> dispatch)"),
)


def bucket(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for needle, name in BUCKETS:
            if needle in frame:
                return name
    return "other (interpreter, libc)"


def task(stack: str) -> str:
    if "Thread._bootstrap" in stack:
        return "grpc's own threads (poller)" if "cygrpc" in stack else "other threads"
    for needle, name in TASKS:
        if needle in stack:
            return name
    return "event loop itself and other callbacks (grpc completions, timers)"


def share(counts: collections.Counter[str], title: str) -> None:
    total = sum(counts.values())
    print(title)
    for name, count in counts.most_common():
        print(f"  {100 * count / total:5.1f}%  {name}")


async def drive(transport: str, seconds: float) -> str:
    """Run the workload while py-spy records the server; the folded stacks' file."""
    with fanout.statehub_server(transport) as server:
        async with fanout.Subscribers(transport, server.port, 100):
            writer = await fanout.open_writer(transport, server.port)
            output = f"profile-{transport}.txt"
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")),
                *("record", "--format", "raw", "--native", "-r", "200"),
                *("-d", str(int(seconds)), "-o", output, "--pid", str(server.process.pid)),
                stdout=subprocess.DEVNULL,
            )
            rate = await writer.pipelined(seconds + 2)
            await spy.wait()
            await writer.close()
    print(f"{transport}: {rate:,.0f} writes/s while profiled")
    return output


def summarise(output: str) -> None:
    where: collections.Counter[str] = collections.Counter()
    tasks: collections.Counter[str] = collections.Counter()
    idle = 0
    with open(output) as folded:
        for line in folded:
            stack, _, samples = line.rstrip().rpartition(" ")
            if stack.rsplit(";", 1)[-1].startswith(IDLE):
                idle += int(samples)
                continue
            where[bucket(stack)] += int(samples)
            tasks[task(stack)] += int(samples)
    busy = sum(where.values())
    print(f"{busy} busy samples, {idle} idle (waiting) samples left out")
    share(where, "by where the innermost known frame is:")
    share(tasks, "by what the work was for:")


if __name__ == "__main__":
    summarise(asyncio.run(drive(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 10.0)))
