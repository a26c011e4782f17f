"""Crash tests: SIGKILL a writing process at random moments; every acknowledged write survives.

Each run writes from several threads (in-process) or clients (over the network) and
prints a line for each write once it is acknowledged, and for each write refused by a
lease. The test kills the process when a random number of acknowledgements has been
seen, opens the data directory and checks: every acknowledged write is there, each
writer's latest value is at least its last acknowledged one, no refused write left a
trace, and changes are all-or-nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from statehub.bench.durable import start_server
from statehub.client import AsyncClient, ConnectionLostError
from statehub.errors import ResourceLockedError
from statehub.store.sqlite import SQLiteStore
from statehub.store.state_dictionary import StateDictionary
from support.polling import eventually_sync

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

KILLS = 5
WRITERS = 8
DEADLINE_S = 60.0

#: One run of the writing process: writer threads on a StateDictionary with SQLiteStore.
IN_PROCESS_WRITER = """
import sys, threading
from statehub.core.change import DictionaryChange
from statehub.store.state_dictionary import StateDictionary
from statehub.errors import ResourceLockedError
from statehub.store.sqlite import SQLiteStore

data, run, writers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
state = StateDictionary(store=SQLiteStore(data))
state.update_locks("guard", acquire={"guarded": None})
out = sys.stdout
print_lock = threading.Lock()

def emit(line):
    with print_lock:
        out.write(line + "\\n")
        out.flush()

def write(index):
    n = 0
    while True:
        n += 1
        if n % 10 == 0:
            change = DictionaryChange({"guarded": [run, index, n], f"refused:{index}:{run}:{n}": 1})
            try:
                state.update_state(index, change)
            except ResourceLockedError:
                emit(f"refused {index} {run} {n}")
                continue
            emit(f"BUG {index} {run} {n}")
        change = DictionaryChange({f"log:{index}:{run}:{n}": n, f"w{index}": [run, n]})
        revision = state.update_state(index, change)
        state.wait_durable(revision)
        emit(f"ack {index} {run} {n} {revision}")

emit("ready")
threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


class Output:
    """The lines a child process prints, collected by a thread as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.strip())

    def wait_for_acks(self, count: int) -> None:
        def enough() -> bool:
            if self._process.poll() is not None:
                raise AssertionError(f"the writer exited early: {self._process.returncode}")
            return sum(line.startswith("ack ") for line in list(self.lines)) >= count

        eventually_sync(enough, f"{count} acknowledgements", timeout=DEADLINE_S, interval=0.005)

    def finish(self) -> list[str]:
        self._thread.join(timeout=DEADLINE_S)
        return self.lines


def start_writer(data: Path, run: int) -> tuple[subprocess.Popen[str], Output]:
    process = subprocess.Popen(
        [sys.executable, "-c", IN_PROCESS_WRITER, str(data), str(run), str(WRITERS)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return process, Output(process)


def check_survivors(data: Path, lines: list[str]) -> int:
    """Open the crashed data directory and check it against the acknowledgements."""
    acked: dict[int, tuple[int, int]] = {}
    acked_keys = []
    last_revision = 0
    for line in lines:
        words = line.split()
        assert words[0] != "BUG", f"a write to a leased key was accepted: {line}"
        if words[0] == "ack":
            index, run, n, revision = map(int, words[1:])
            acked_keys.append(f"log:{index}:{run}:{n}")
            acked[index] = max(acked.get(index, (0, 0)), (run, n))
            last_revision = max(last_revision, revision)
    store = SQLiteStore(data)
    try:
        assert store.loaded_revision >= last_revision
        content = StateDictionary(store=store).copy_content()
    finally:
        store.close()
    missing = [key for key in acked_keys if key not in content]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    for index, (run, n) in acked.items():
        latest = content[f"w{index}"]
        assert isinstance(latest, list)
        assert tuple(latest) >= (run, n), f"writer {index}: {latest} older than acked {run, n}"
        # all-or-nothing: the value of w<i> came with its log key in one change
        assert f"log:{index}:{latest[0]}:{latest[1]}" in content
    assert "guarded" not in content
    assert not [key for key in content if key.startswith("refused:")]
    return len(acked_keys)


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(os.environ.get("STATEHUB_CRASH_SEED", "1"))
    all_lines: list[str] = []
    for run in range(1, KILLS + 1):
        process, output = start_writer(data, run)
        try:
            output.wait_for_acks(rng.randint(1, 400))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=DEADLINE_S)
        all_lines += output.finish()
        assert check_survivors(data, all_lines) > 0
    assert any(line.startswith("refused ") for line in all_lines)  # leases were exercised


async def write_over_network(
    port: int, run: int, process: subprocess.Popen[str], kill_after: int
) -> list[str]:
    """Clients write until the server is killed (after ``kill_after`` acks); the log lines."""
    lines: list[str] = []
    guard = AsyncClient("127.0.0.1", port, reconnect=False)
    clients = [AsyncClient("127.0.0.1", port, reconnect=False) for _ in range(WRITERS)]
    await asyncio.gather(guard.connect(), *(client.connect() for client in clients))
    assert await guard.attempt_update_locks({"guarded": 3600.0})  # None would release
    killed = asyncio.Event()

    def acknowledged(line: str) -> None:
        lines.append(line)
        if not killed.is_set() and sum(x.startswith("ack ") for x in lines) >= kill_after:
            process.send_signal(signal.SIGKILL)  # at once, while other writes are in flight
            killed.set()

    async def write(index: int) -> None:
        client, n = clients[index], 0
        while True:
            n += 1
            try:
                if n % 10 == 0:
                    change = {"guarded": [run, index, n], f"refused:{index}:{run}:{n}": 1}
                    try:
                        await client.update(change)
                    except ResourceLockedError:
                        lines.append(f"refused {index} {run} {n}")
                        continue
                    lines.append(f"BUG {index} {run} {n}")
                revision = await client.update({f"log:{index}:{run}:{n}": n, f"w{index}": [run, n]})
            except ConnectionLostError:
                return
            acknowledged(f"ack {index} {run} {n} {revision}")

    try:
        await asyncio.wait_for(asyncio.gather(*(write(i) for i in range(WRITERS))), DEADLINE_S)
    finally:
        await asyncio.gather(guard.close(), *(client.close() for client in clients))
    assert killed.is_set()
    return lines


def test_server_sigkilled_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(os.environ.get("STATEHUB_CRASH_SEED", "1"))
    all_lines: list[str] = []
    for run in range(1, KILLS + 1):
        process, port = start_server(str(data), "disk", stderr=None)  # statehub serve --data DATA
        try:
            all_lines += asyncio.run(write_over_network(port, run, process, rng.randint(1, 300)))
        finally:
            process.kill()
            process.wait(timeout=DEADLINE_S)
        assert check_survivors(data, all_lines) > 0
    assert any(line.startswith("refused ") for line in all_lines)
