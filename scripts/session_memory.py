"""What one idle subscriber costs the server, piece by piece (tracemalloc).

Usage: .venv/bin/python scripts/session_memory.py [tcp|grpc] [N] [--lines K]

Starts a ``StateServer`` (gRPC plus the plain-TCP listener, as ``statehub bench fanout``
does) in a child process with tracemalloc on, then opens N subscribers (hello, then
``subscribe`` to everything at interval 0) from this process. The server compares a
snapshot taken before they connected with one taken once they are all idle and prints:

- the bytes per subscriber that tracemalloc saw, and the RSS growth per subscriber;
- those bytes grouped by the first statehub frame on the allocation's stack (which part
  of statehub asked for the memory, even when asyncio or grpc allocated it);
- the K biggest allocation sites (file:line), per subscriber.
"""

from __future__ import annotations

import ast
import asyncio
import collections
import functools
import linecache
import os
import subprocess
import sys
import tracemalloc

from statehub.bench.fanout import RawSession, raise_file_limit

#: Stack depth tracemalloc keeps: deep enough to reach statehub's frame from asyncio's.
FRAMES = 30

#: The pieces of an idle subscriber, by the statehub function that asked for the memory
#: (the first piece naming a part of it wins); the rest is "other".
PIECES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "reader and writer tasks (serve_session, their waits)",
        (
            *("transport.py:serve_session", "transport.py:_feed", "Session.next_frame"),
            *("Outbox.next_frame", "outbox.py:_wait", "TcpFrames.read", "_GrpcFrames.read"),
        ),
    ),
    (
        "subscription (task, change view, pacing, first batch)",
        (
            *("Session._run_subscription", "Session._start_subscription", "Session._subscribe"),
            *("Session._spawn", "notifier.py:", "buffers.py:", "state_dictionary.py:"),
            *("change.py:", "_flush_now", "change_batches.py:"),
        ),
    ),
    ("session object, its containers, outbox", ("Session.__init__", "Outbox.__init__", "_hello")),
    (
        "connection (socket, transport, streams or protocol, its task, Peer)",
        ("(asyncio", "tcp_transport.py:", "grpc_transport.py:"),
    ),
)


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@functools.cache
def _functions(filename: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function in a source file."""
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, outer: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{outer}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found.append((child.lineno, child.end_lineno or child.lineno, name))
                visit(child, f"{name}.")
            else:
                visit(child, outer)

    try:
        with open(filename) as source:
            visit(ast.parse(source.read()), "")
    except (OSError, SyntaxError):
        pass
    return found


def _function(frame: tracemalloc.Frame) -> str:
    """``file:function`` of a frame (the innermost function holding its line)."""
    spans = [span for span in _functions(frame.filename) if span[0] <= frame.lineno <= span[1]]
    name = min(spans, key=lambda span: span[1] - span[0])[2] if spans else "<module>"
    return f"{frame.filename.rsplit('/', 1)[-1]}:{name}"


def _owner(traceback: tracemalloc.Traceback, lines: bool = False) -> str:
    """The statehub function (or line) that asked for an allocation: its innermost frame."""
    for frame in reversed(traceback):  # innermost last when most_recent_first=False
        if "/statehub/" in frame.filename:
            if not lines:
                return _function(frame)
            source = linecache.getline(frame.filename, frame.lineno).strip()[:60]
            return f"{_function(frame)}:{frame.lineno}  {source}"
    return f"(asyncio, accepting the connection) {_function(traceback[-1])}"


def server_main() -> None:
    """The child: serve, and report the memory diff when told (lines on stdin)."""
    from statehub.serving.state_server import StateServer

    raise_file_limit()
    tracemalloc.start(FRAMES)

    async def main() -> None:
        server = StateServer(address="127.0.0.1", port=0)
        await server.start()
        loop = asyncio.get_running_loop()
        print(f"grpc {server.grpc_port} tcp {server.tcp_port}", flush=True)
        command = await loop.run_in_executor(None, sys.stdin.readline)  # "baseline"
        before, rss_before = tracemalloc.take_snapshot(), _rss_kib()
        print("ok", flush=True)
        command = await loop.run_in_executor(None, sys.stdin.readline)  # "report N K"
        _, count_text, lines_text = command.split()
        await asyncio.sleep(1.0)  # let the connection storm settle
        after, rss_after = tracemalloc.take_snapshot(), _rss_kib()
        _report(before, after, rss_after - rss_before, int(count_text), int(lines_text))
        print("done", flush=True)
        await server.stop()

    asyncio.run(main())


def _report(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, rss_kib: int, count: int, lines: int
) -> None:
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    diffs = after.compare_to(before, "traceback")
    total = sum(diff.size_diff for diff in diffs)
    by_owner: collections.Counter[str] = collections.Counter()
    for diff in diffs:
        by_owner[_owner(diff.traceback)] += diff.size_diff
    out = sys.stdout
    out.write(
        f"\n{count} idle subscribers: tracemalloc +{total / count / 1024:.2f} KiB each, "
        f"RSS +{rss_kib / count:.2f} KiB each\n\n"
    )
    by_piece: collections.Counter[str] = collections.Counter()
    for owner, size in by_owner.items():
        piece = next((name for name, parts in PIECES if any(p in owner for p in parts)), "other")
        by_piece[piece] += size
    out.write("by piece (bytes per subscriber):\n")
    for piece, size in by_piece.most_common():
        out.write(f"{size / count:9.0f}  {piece}\n")
    out.write("\nby the statehub function that asked for it (bytes per subscriber):\n")
    for owner, size in by_owner.most_common(lines):
        out.write(f"{size / count:9.0f}  {owner}\n")
    out.write("\nby the statehub line that asked for it (bytes per subscriber):\n")
    by_line: collections.Counter[str] = collections.Counter()
    for diff in diffs:
        by_line[_owner(diff.traceback, lines=True)] += diff.size_diff
    for owner, size in by_line.most_common(lines):
        out.write(f"{size / count:9.0f}  {owner}\n")
    out.write("\nby allocation site (bytes per subscriber):\n")
    for stat in after.compare_to(before, "lineno")[:lines]:
        frame = stat.traceback[0]
        where = f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}"
        source = linecache.getline(frame.filename, frame.lineno).strip()[:60]
        out.write(f"{stat.size_diff / count:9.0f}  {where}  {source}\n")
    out.flush()


async def _subscribe(transport: str, port: int, gate: asyncio.Semaphore) -> RawSession:
    async with gate:
        session = await RawSession.open(transport, port)
        await session.requests([{"op": "subscribe", "interval": 0.0, "prefix": "", "since": None}])
        return session


async def clients(process: subprocess.Popen[str], transport: str, count: int, lines: int) -> None:
    """Connect the subscribers and relay the server's report (blocking pipes: a script)."""
    assert process.stdin is not None and process.stdout is not None
    grpc_port, tcp_port = (int(part) for part in process.stdout.readline().split()[1::2])
    port = tcp_port if transport == "tcp" else grpc_port
    warm = [await _subscribe(transport, port, asyncio.Semaphore(1)) for _ in range(5)]
    process.stdin.write("baseline\n")
    process.stdin.flush()
    process.stdout.readline()
    gate = asyncio.Semaphore(100)
    sessions = await asyncio.gather(*(_subscribe(transport, port, gate) for _ in range(count)))
    process.stdin.write(f"report {count} {lines}\n")
    process.stdin.flush()
    while (line := process.stdout.readline()) and line != "done\n":
        print(line, end="")
    for session in [*warm, *sessions]:
        await session.frames.close()


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        server_main()
        return
    arguments = sys.argv[1:]
    lines = 25
    if "--lines" in arguments:
        at = arguments.index("--lines")
        lines = int(arguments[at + 1])
        del arguments[at : at + 2]
    transport = arguments[0] if arguments else "tcp"
    count = int(arguments[1]) if len(arguments) > 1 else 1000
    raise_file_limit()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        asyncio.run(clients(process, transport, count, lines))
    finally:
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    main()
