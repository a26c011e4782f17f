"""The dashboard's own cost: what an open dashboard costs the server while the state churns.

A fresh ``statehub serve`` process holds 10,000 keys; a writer (a child process, over
gRPC) changes ``CHANGING`` of them in one update at 30 Hz on a steady clock. Then 0, 1 and
2 dashboards are opened in Debian's headless chromium (Playwright, as the browser tests
do), each waited for until it shows all 10,000 keys. Over a window after a settling
second, for each number of dashboards:

- the server process's CPU (``/proc/<pid>/stat``, every thread), as a share of one core;
  the cost per dashboard is what is left after the writer's share (measured with no
  dashboard, per change, times the changes written in this window), divided by the number
  of dashboards;
- the bytes the pages receive on their WebSocket (every frame, as chromium sees it), per
  second and dashboard: the page's subscription coalesces changes per 0.1 s, so this
  does not grow with the write rate beyond the changed keys' values;
- the key changes per second the writer achieved (it falls behind its 30 Hz when the
  machine cannot keep up, and the table says so rather than hiding it).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from importlib.util import find_spec
from typing import Any

from statehub.bench.room import Served, process_cpu_seconds, serve
from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient
from statehub.extras import MissingExtraError

#: Debian's chromium: Playwright's own browser download cannot work on these machines.
CHROMIUM = "/usr/bin/chromium"
#: Headless, as root, and nothing that reaches for the network outside the machine.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

KEYS = 10_000
CHANGING = 1_000  # keys changed by each 30 Hz update (the browser test's 1,000 at 30 Hz)
RATE = 30.0
DASHBOARDS = (0, 1, 2)
SETTLE_S = 1.0
WINDOW_S = 5.0
LOADED_MS = 30_000  # how long a page may take to show all 10,000 keys


def run(
    keys: int = KEYS,
    changing: int = CHANGING,
    dashboards: tuple[int, ...] = DASHBOARDS,
    window: float = WINDOW_S,
) -> list[Result]:
    """The table's rows; ``dashboards`` must start with 0 (the writer's own share)."""
    missing = what_is_missing()
    if missing:
        raise MissingExtraError(missing)
    if dashboards[:1] != (0,):
        raise ValueError(f"dashboards must start with 0 (the baseline), got {dashboards!r}")
    with serve() as served, _writer(served.grpc_port, keys, changing) as writer:
        return asyncio.run(_measure(served, writer, keys, changing, dashboards, window))


def what_is_missing() -> str:
    """Why the dashboard's cost cannot be measured here ("" if it can)."""
    if find_spec("playwright") is None or not os.path.exists(CHROMIUM):
        return (
            "the dashboard's cost needs Playwright (a dev dependency: make dev) and Debian's "
            f"chromium at {CHROMIUM} (apt-get install chromium)"
        )
    return ""


async def _measure(
    served: Served,
    writer: _Writer,
    keys: int,
    changing: int,
    dashboards: tuple[int, ...],
    window: float,
) -> list[Result]:
    from playwright.async_api import async_playwright

    where = f"{keys:,} keys, {changing:,} of them changing at {RATE:.0f} Hz"
    results: list[Result] = []
    writer_cost = 0.0
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for count in dashboards:
                received: list[int] = []
                pages = [
                    await _open(browser, served.http_port, keys, received) for _ in range(count)
                ]
                await asyncio.sleep(SETTLE_S)
                received.clear()
                pid = served.process.pid
                cpu, changes = process_cpu_seconds(pid), writer.changes()
                started = time.monotonic()
                await asyncio.sleep(window)
                elapsed = time.monotonic() - started
                cpu = (process_cpu_seconds(pid) - cpu) / elapsed * 100
                rate = (writer.changes() - changes) / elapsed
                for page in pages:
                    await page.close()
                shown = f"{count} dashboard{'s' if count != 1 else ''} open, {where}"
                results.append(Result(f"server CPU, {shown}", cpu, "% of a core"))
                results.append(Result(f"key changes written, {shown}", rate, "changes/s"))
                if count == 0:
                    writer_cost = cpu / rate if rate else 0.0  # the writer's share, per change/s
                    continue
                per = f"per dashboard ({count} open), {where}"
                # The writer may fall behind with pages open (chromium wants the CPUs too):
                # take off the writer's share at the rate it achieved, not at 30 Hz.
                own = (cpu - writer_cost * rate) / count
                results.append(Result(f"server CPU {per}", own, "% of a core"))
                results.append(
                    Result(f"bytes/s to the page {per}", sum(received) / elapsed / count, "B/s")
                )
        finally:
            await browser.close()
    return results


async def _open(browser: Any, http_port: int, keys: int, received: list[int]) -> Any:
    """A dashboard page, once it shows all ``keys``; its WebSocket frames' sizes go to
    ``received``."""
    from playwright.async_api import expect

    page = await browser.new_page(viewport={"width": 1280, "height": 900})

    def count_frames(socket: Any) -> None:
        socket.on("framereceived", lambda payload: received.append(len(payload)))

    page.on("websocket", count_frames)
    await page.goto(f"http://127.0.0.1:{http_port}/")
    await expect(page.locator("#status")).to_have_text("live", timeout=LOADED_MS)
    shows_all = f"of {keys} keys"
    await expect(page.locator("#key-count")).to_contain_text(shows_all, timeout=LOADED_MS)
    return page


class _Writer:
    """The writer process's count of key changes, read through a shared integer."""

    def __init__(self, counter: Any) -> None:
        self._counter = counter

    def changes(self) -> int:
        return int(self._counter.value)


@contextmanager
def _writer(grpc_port: int, keys: int, changing: int) -> Iterator[_Writer]:
    """A child process that fills the state with ``keys``, then changes ``changing`` of them
    at 30 Hz."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(1, mp_context=context) as pool:
        counter, ready, done = manager.Value("q", 0), manager.Event(), manager.Event()
        running = pool.submit(_write_in_process, grpc_port, keys, changing, counter, ready, done)
        if not ready.wait(60):
            raise RuntimeError(f"the bench writer did not fill the state: {running}")
        try:
            yield _Writer(counter)
        finally:
            done.set()
            running.result(timeout=30)


def _write_in_process(
    grpc_port: int, keys: int, changing: int, counter: Any, ready: Any, done: Any
) -> None:
    asyncio.run(_write(grpc_port, keys, changing, counter, ready, done))


async def _write(
    grpc_port: int, keys: int, changing: int, counter: Any, ready: Any, done: Any
) -> None:
    async with AsyncClient(
        f"statehub+grpc://127.0.0.1:{grpc_port}", name="bench-writer", reconnect=False
    ) as client:
        await client.update({f"lab/instrument-{n}/reading": 0.0 for n in range(keys)})
        ready.set()
        loop = asyncio.get_running_loop()
        started, tick, written = loop.time(), 0, 0
        while not done.is_set():
            tick += 1
            # Spread over the keys: each tick changes the next ``changing`` of them.
            first = tick * changing % keys
            changed = [f"lab/instrument-{(first + n) % keys}/reading" for n in range(changing)]
            await client.update({key: tick / RATE for key in changed})
            written += changing
            counter.value = written
            # A steady clock: a late tick is not made up by a burst.
            delay = started + tick / RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                started, tick = loop.time(), 0
