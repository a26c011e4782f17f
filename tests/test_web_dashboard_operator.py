"""The dashboard as an operator uses it (issue 23), in Debian's chromium via Playwright.

10,000 keys: the search finds a key by substring within a second, the tree counts keys by
delimiter, the list sorts naturally (avatar.2 before avatar.10) and stays responsive while
1,000 keys change 30 times a second (frame times measured in the page); removing asks
first; an edit of a value that changed since it was read is refused; a viewer without
the write right sees no active write button; a key's history lists who changed it, newest
first, diffs two versions and plots numbers. Screenshots go to artefacts/ (the ones in
docs/images/ are copies of these).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect

from statehub import AsyncClient, DictionaryChange, HistoryRetention, StateDictionary, StateServer
from statehub.endpoints.attach import endpoints_running
from statehub.endpoints.config import load_config
from support.browser import needs_browser
from support.polling import eventually
from support.raw_session import running_server

ARTEFACTS = Path(__file__).parent.parent / "artefacts"
FIXTURES = Path(__file__).parent / "fixtures"
SOON_MS = 5_000

pytestmark = needs_browser

#: The keys of a big lab: 5,000 avatars, 2,500 instruments under '/', 2,500 scene keys.
BIG_STATE: dict[str, Any] = {
    **{f"avatar.{n}": {"pos": [n, 1.5, 0], "name": f"user {n}"} for n in range(5000)},
    **{f"lab/instrument-{n}/temperature": 20 + n / 100 for n in range(2500)},
    **{f"scene.object.{n}": {"kind": "box", "size": n % 7} for n in range(2500)},
}

#: Rows of the virtualised list in the order shown (rows are reused, so DOM order is not).
VISIBLE_KEYS = """() => [...document.querySelectorAll('#state .krow:not([hidden])')]
    .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
    .map((row) => row.dataset.key)"""

#: Frame intervals (ms) over ``seconds``, measured with requestAnimationFrame.
FRAME_TIMES = """(seconds) => new Promise((resolve) => {
    const times = [];
    let last = performance.now();
    const end = last + seconds * 1000;
    const tick = (now) => {
        times.push(now - last);
        last = now;
        if (now < end) requestAnimationFrame(tick); else resolve(times);
    };
    requestAnimationFrame(tick);
})"""


async def open_dashboard(
    browser: Browser, server: StateServer, width: int = 1280, height: int = 900
) -> tuple[Page, list[str]]:
    """The page, and the errors it logs (page errors, console errors, failed requests)."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on(
        "response",
        lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    await page.goto(f"http://127.0.0.1:{server.http_port}/")
    await expect(page.locator("#status")).to_have_text("live", timeout=SOON_MS)
    return page, errors


async def screenshot(page: Page, name: str) -> None:
    ARTEFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTEFACTS / name)


async def test_among_10000_keys_search_tree_counts_and_natural_sort(browser: Browser) -> None:
    async with running_server(http_port=0) as server:
        server.state.update_state(None, DictionaryChange(BIG_STATE))
        page, errors = await open_dashboard(browser, server)
        try:
            await expect(page.locator("#key-count")).to_have_text(
                "(10000 of 10000 keys)", timeout=SOON_MS
            )
            tree = page.locator("#tree")
            await expect(tree.locator('[data-node="avatar."] .count')).to_have_text("5000")
            await expect(tree.locator('[data-node="lab/"] .count')).to_have_text("2500")
            await expect(tree.locator('[data-node="scene."] .count')).to_have_text("2500")
            await tree.locator('[data-node="lab/"] .twisty').click()  # open it: its children
            await expect(tree.locator('[data-node="lab/instrument-10/"] .count')).to_have_text("1")
            await page.fill("#delimiters", "/")  # the tree by '/' only
            await expect(tree.locator('[data-node="avatar."]')).to_have_count(0)
            await expect(tree.locator('[data-node="lab/"] .count')).to_have_text("2500")
            await page.fill("#delimiters", "./")

            started = time.perf_counter()
            await page.fill("#search", "instrument-1234/temp")
            row = page.locator('#state .krow[data-key="lab/instrument-1234/temperature"]')
            await expect(row).to_be_visible(timeout=1_000)
            assert time.perf_counter() - started < 1.0
            await expect(page.locator("#key-count")).to_have_text("(1 of 10000 keys)")
            await expect(row.locator(".v")).to_have_text("32.34")

            await page.fill("#search", "avatar.1?")  # a glob: the whole key
            await expect(page.locator("#key-count")).to_have_text("(10 of 10000 keys)")
            assert await page.evaluate(VISIBLE_KEYS) == [f"avatar.{n}" for n in range(10, 20)]

            await page.fill("#search", "")
            await tree.locator('[data-node="avatar."]').click()
            await expect(page.locator("#prefix")).to_have_value("avatar.")
            await expect(page.locator("#key-count")).to_have_text("(5000 of 10000 keys)")
            shown = await page.evaluate(VISIBLE_KEYS)
            assert shown[:12] == [f"avatar.{n}" for n in range(12)]  # natural: 2 before 10
            first = page.locator('#state .krow[data-key="avatar.1"] .v')
            await expect(first).to_have_text('{2 keys} {"pos":[1,1.5,0],"name":"user 1"}')

            await page.click('#state .krow[data-key="avatar.1"]')
            await expect(page.locator("#facts")).to_contain_text("last changed at revision")
            await expect(page.locator("#write-value")).to_have_value(
                '{\n  "pos": [\n    1,\n    1.5,\n    0\n  ],\n  "name": "user 1"\n}'
            )
            await screenshot(page, "dashboard-keys.png")
            assert errors == []
        finally:
            await page.close()


async def test_the_page_stays_responsive_while_1000_keys_change_30_times_a_second(
    browser: Browser,
) -> None:
    async with running_server(http_port=0) as server:
        server.state.update_state(None, DictionaryChange(BIG_STATE))
        page, errors = await open_dashboard(browser, server)
        stop = asyncio.Event()

        async def write_at_30_hz() -> int:
            rounds = 0
            while not stop.is_set() and rounds < 30 * 30:  # bounded: 30 s at most
                rounds += 1
                change = {f"avatar.{n}": {"pos": [n, rounds, 0]} for n in range(1000)}
                server.state.update_state(None, DictionaryChange(change))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1 / 30)
            return rounds

        try:
            await expect(page.locator("#key-count")).to_have_text(
                "(10000 of 10000 keys)", timeout=SOON_MS
            )
            await page.locator("#tree [data-node='avatar.']").click()
            writer = asyncio.ensure_future(write_at_30_hz())
            try:
                frames: list[float] = await page.evaluate(FRAME_TIMES, 3)
                await screenshot(page, "dashboard-live.png")
                await page.fill("#search", "avatar.99")
                await expect(page.locator('#state .krow[data-key="avatar.999"]')).to_be_visible(
                    timeout=1_000
                )
            finally:
                stop.set()
                rounds = await writer
            assert rounds >= 30
            frames = frames[1:]
            median = statistics.median(frames)
            p95 = sorted(frames)[int(len(frames) * 0.95)]
            print(f"frames: {len(frames)}, median {median:.1f} ms, p95 {p95:.1f} ms")
            # Loose bounds (the machine is shared): a 60 Hz page draws a frame in ~17 ms.
            assert median < 50, frames
            assert p95 < 250, frames
            assert errors == []
        finally:
            await page.close()


async def test_remove_asks_first_and_bulk_remove_says_how_many(browser: Browser) -> None:
    async with running_server(http_port=0) as server:
        server.state.update_state(
            None, DictionaryChange({"tmp.a": 1, "tmp.b": 2, "tmp.c": 3, "keep": 0})
        )
        page, errors = await open_dashboard(browser, server)
        try:
            await page.click('#state .krow[data-key="tmp.a"]')
            await expect(page.locator("#write-value")).to_have_value("1", timeout=SOON_MS)
            await page.click("#remove-key")
            await expect(page.locator("#confirm")).to_be_visible()
            await expect(page.locator("#confirm-text")).to_have_text("Remove 1 key?")
            await page.click("#confirm-cancel")
            await expect(page.locator("#write-result")).to_have_text("not removed")
            assert server.state.get("tmp.a") == 1

            await page.click("#remove-key")
            await page.click("#confirm-ok")
            await expect(page.locator("#write-result")).to_contain_text("removed 'tmp.a'")
            assert "tmp.a" not in server.state.copy_content()

            # Removing a key that is gone by then says so. (The click waits for the table to
            # drop tmp.a's row: a click while rows move can land on the row below.)
            await expect(page.locator('#state .krow[data-key="tmp.a"]')).to_have_count(0)
            await page.click('#state .krow[data-key="tmp.b"]')
            await expect(page.locator("#write-value")).to_have_value("2", timeout=SOON_MS)
            await page.fill("#write-value", "20")  # editing: the page keeps what was read
            server.state.update_state(None, DictionaryChange({}, ["tmp.b"]))
            await expect(page.locator("#write-result")).to_contain_text(
                "changed on the server", timeout=SOON_MS
            )
            await page.click("#remove-key")
            await page.click("#confirm-ok")
            await expect(page.locator("#write-result")).to_have_text(
                "no key 'tmp.b': nothing removed"
            )

            await page.fill("#prefix", "tmp.")
            await expect(page.locator("#bulk-remove")).to_have_text("Remove 1 matching key…")
            server.state.update_state(None, DictionaryChange({"tmp.d": 4}))
            await expect(page.locator("#bulk-remove")).to_have_text(
                "Remove 2 matching keys…", timeout=SOON_MS
            )
            await page.click("#bulk-remove")
            await expect(page.locator("#confirm-text")).to_have_text(
                "Remove 2 keys matching the filter?"
            )
            await expect(page.locator("#confirm-list li")).to_have_text(["tmp.c", "tmp.d"])
            await screenshot(page, "dashboard-confirm.png")
            await page.click("#confirm-ok")
            await expect(page.locator("#bulk-result")).to_contain_text("removed 2 keys")
            assert sorted(server.state.copy_content()) == ["keep"]
            assert errors == []
        finally:
            await page.close()


async def test_an_edit_of_a_value_changed_since_it_was_read_is_refused(browser: Browser) -> None:
    async with running_server(http_port=0) as server:
        server.state.update_state(None, DictionaryChange({"lab.cfg": {"gain": 1}}))
        page, errors = await open_dashboard(browser, server)
        client = AsyncClient("127.0.0.1", server.port)
        try:
            await page.click('#state .krow[data-key="lab.cfg"]')
            editor = page.locator("#write-value")
            await expect(editor).to_have_value('{\n  "gain": 1\n}', timeout=SOON_MS)
            await page.fill("#write-value", '{"gain": ')
            await expect(page.locator("#validation")).to_contain_text("not valid JSON")
            await expect(page.locator("#save")).to_be_disabled()
            await page.fill("#write-value", '{"gain": 2}')
            await expect(page.locator("#validation")).to_have_text("valid JSON")
            await expect(page.locator("#preview .after")).to_have_text('+ {1 key} {"gain":2}')

            await client.set("lab.cfg", {"gain": 5})  # someone else, meanwhile
            await page.click("#save")
            await expect(page.locator("#write-result")).to_contain_text(
                "changed since you read it", timeout=SOON_MS
            )
            assert await client.get("lab.cfg") == {"gain": 5}
            await screenshot(page, "dashboard-stale-edit.png")

            await page.click("#reload-key")
            await expect(editor).to_have_value('{\n  "gain": 5\n}', timeout=SOON_MS)
            await page.fill("#write-value", '{"gain": 6}')
            await page.click("#save")
            await expect(page.locator("#write-result")).to_contain_text("set at revision")
            assert await client.get("lab.cfg") == {"gain": 6}
            assert errors == []
        finally:
            await client.close()
            await page.close()


async def test_the_read_only_toggle_disables_every_write_button(browser: Browser) -> None:
    async with running_server(http_port=0) as server:
        server.state.update_state(None, DictionaryChange({"a": 1}))
        page, errors = await open_dashboard(browser, server, width=820, height=1180)
        try:
            await page.click('#state .krow[data-key="a"]')
            await expect(page.locator("#save")).to_be_enabled(timeout=SOON_MS)
            await page.check("#readonly")
            for button in ("#new-key", "#bulk-remove", "#save", "#remove-key"):
                await expect(page.locator(button)).to_be_disabled()
            await screenshot(page, "dashboard-tablet.png")
            await page.uncheck("#readonly")
            await expect(page.locator("#save")).to_be_enabled()
            assert errors == []
        finally:
            await page.close()


async def test_leases_and_locks_name_their_holders_and_waiters(browser: Browser) -> None:
    async with running_server(http_port=0) as server:
        server.state.update_state(None, DictionaryChange({"lab.arm": {"angle": 12}}))
        page, errors = await open_dashboard(browser, server)
        robot = AsyncClient("127.0.0.1", server.port, name="lab-robot")
        grader = AsyncClient("127.0.0.1", server.port, name="grader-7")
        held = asyncio.Event()
        done = asyncio.Event()

        async def hold() -> None:
            async with robot.get_lock("run/42"):
                held.set()
                await done.wait()

        async def wait_for_it() -> None:
            async with grader.get_lock("run/42", exclusive=False, timeout=60):
                pass

        holding = asyncio.ensure_future(hold())
        waiting: asyncio.Future[None] | None = None
        try:
            assert await robot.attempt_update_locks({"lab.arm": 120})
            await asyncio.wait_for(held.wait(), 10)
            waiting = asyncio.ensure_future(wait_for_it())
            locks = page.locator("#locks")
            await expect(locks).to_contain_text("waits (shared)", timeout=SOON_MS)
            await expect(locks).to_contain_text("holds (exclusive)")
            await expect(locks).to_contain_text("lab-robot (anyone)")
            await expect(locks).to_contain_text("grader-7 (anyone)")
            await expect(locks).to_contain_text("tells each holder")
            await expect(locks.locator("button.force-release")).to_be_enabled()
            lease = page.locator('#leases tr[data-key="lab.arm"]')
            await expect(lease).to_contain_text("lab-robot (anyone)", timeout=SOON_MS)

            await page.click('#state .krow[data-key="lab.arm"]')
            facts = page.locator("#facts")
            await expect(facts).to_contain_text("held by lab-robot (anyone)", timeout=SOON_MS)
            await expect(facts).to_contain_text("s left")
            await expect(facts).to_contain_text("12 B")
            await page.locator("#locks-section").scroll_into_view_if_needed()
            await screenshot(page, "dashboard-locks.png")

            # Force: clearing every session's leases (admin right; no --auth: everyone).
            await page.click("#clear-leases")
            await expect(page.locator("#confirm-text")).to_have_text(
                "Clear 1 lease, whichever session holds it?"
            )
            await page.click("#confirm-ok")
            await expect(page.locator("#clear-result")).to_have_text("every lease cleared")
            assert server.state.leases() == []
            assert errors == []
        finally:
            done.set()
            await holding
            if waiting is not None:
                await waiting
            await robot.close()
            await grader.close()
            await page.close()


async def test_command_forms_health_tail_and_a_one_point_plot(browser: Browser) -> None:
    config = load_config(FIXTURES / "endpoints_dripline.yaml")
    async with (
        running_server(http_port=0) as server,
        endpoints_running(server, config) as endpoints,
    ):
        endpoints.set("my_store.peaches", 0.5)  # one logged value
        page, errors = await open_dashboard(browser, server)
        client = AsyncClient("127.0.0.1", server.port, name="writer")
        try:
            # A form from the command's arguments: endpoint.get needs an address.
            form = page.locator('form.command[data-command="endpoint.get"]')
            await expect(form.locator(".arg")).to_contain_text(["address *", "specifier"])
            await form.locator("button").click()
            await expect(form.locator(".result")).to_have_text("'address' is required")
            await form.locator('input[name="address"]').fill("my_store.peaches")
            await form.locator("button").click()
            await expect(form.locator(".result")).to_contain_text('"value_cal": 1', timeout=SOON_MS)

            # The plot of one point spans a minute, not years.
            plot = page.locator('.endpoint[data-endpoint="my_store.peaches"] .plot')
            await expect(plot.locator("canvas").first).to_be_visible(timeout=SOON_MS)
            assert await plot.get_attribute("data-points") == "1"
            span = await plot.get_attribute("data-span")
            assert span is not None and 59 <= float(span) <= 61

            # Health: links and the server's own figures.
            for path in ("/healthz", "/readyz", "/metrics"):
                await expect(page.locator(f'#health-section a[href="{path}"]')).to_be_visible()
            sessions = page.locator('#health tr[data-figure="sessions"] td')
            await expect(sessions).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=SOON_MS)
            await expect(page.locator('#health tr[data-figure="commits/s"]')).to_be_visible(
                timeout=SOON_MS
            )

            # The live tail: latest first, filtered by prefix, pausable.
            await page.fill("#tail-prefix", "tail.")
            await client.set("tail.a", 1)
            await client.set("other", 1)
            await client.set("tail.b", {"x": 2})
            rows = page.locator("#tail tbody tr")
            await expect(rows.locator("td.key")).to_have_text(["tail.b", "tail.a"], timeout=SOON_MS)
            await page.check("#tail-pause")
            await client.set("tail.c", 3)
            await client.remove("tail.a")
            await expect(page.locator('#state .krow[data-key="tail.c"]')).to_have_count(1)
            await expect(rows.locator("td.key")).to_have_text(["tail.b", "tail.a"])
            await page.uncheck("#tail-pause")
            await client.remove("tail.b")
            await expect(rows.first).to_contain_text("(removed)", timeout=SOON_MS)
            await page.locator("#tail-section").scroll_into_view_if_needed()
            await screenshot(page, "dashboard-tail-health.png")
            assert errors == []
        finally:
            await client.close()
            await page.close()


#: The history table's revisions, top to bottom.
HISTORY_REVISIONS = "rows => rows.map((row) => Number(row.dataset.revision))"


async def test_a_keys_history_says_who_changed_it_diffs_two_versions_and_plots_numbers(
    browser: Browser,
) -> None:
    state = StateDictionary(history=HistoryRetention(versions=20))
    async with running_server(http_port=0, state=state) as server:
        alice = AsyncClient("127.0.0.1", server.port, name="alice-headset")
        bob = AsyncClient("127.0.0.1", server.port, name="bob-script")
        page: Page | None = None
        try:
            await alice.set("lab.cfg", {"gain": 1, "mode": "idle"})
            await bob.set("lab.cfg", {"gain": 2, "mode": "idle"})
            await alice.set("lab.cfg", {"gain": 2, "mode": "run", "note": "x"})
            for writer, celsius in ((alice, 20.5), (bob, 21.0), (alice, 21.25), (bob, 20.75)):
                await writer.set("lab.temperature", celsius)
            await alice.set("tmp.x", "a")
            await bob.remove("tmp.x")
            await alice.set("tmp.x", "b")
            await bob.set("lab.pressure", 1013)
            # The state's own removals: a ttl that ran out, a session that ended (its
            # client gone before the page opened: no name to find for it).
            await alice.set("lab.visitor", "rita", ttl=0.2)
            carol = AsyncClient("127.0.0.1", server.port, name="carol-tablet")
            await carol.set("lab.seat", 3, ephemeral=True)
            await carol.close()
            await eventually(lambda: not {"lab.visitor", "lab.seat"} & set(state.copy_content()))
            await bob.set("lab.visitor", "sam")
            await bob.set("lab.seat", 4)
            page, errors = await open_dashboard(browser, server)

            await page.click('#state .krow[data-key="lab.cfg"]')
            rows = page.locator("#history tbody tr")
            await expect(rows).to_have_count(3, timeout=SOON_MS)
            revisions = await rows.evaluate_all(HISTORY_REVISIONS)
            assert revisions == sorted(revisions, reverse=True)
            alice_wrote = re.compile(r"^alice-headset \(anyone\) · session [0-9a-f]{8}$")
            bob_wrote = re.compile(r"^bob-script \(anyone\) · session [0-9a-f]{8}$")
            await expect(rows.locator("td.by")).to_have_text([alice_wrote, bob_wrote, alice_wrote])
            await expect(rows.first.locator("td.v")).to_contain_text('"mode":"run"')
            await expect(page.locator('#facts tr[data-fact="by"] td')).to_have_text(alice_wrote)
            await expect(page.locator("#history-retention")).to_contain_text("last 20 versions")

            # The diff of the newest two by default; then the oldest against the middle one.
            diff = page.locator("#history-diff")
            await expect(diff.locator("li")).to_have_text(['~ mode: "idle" → "run"', '+ note: "x"'])
            await rows.nth(2).locator('input[name="diff-from"]').check()
            await rows.nth(1).locator('input[name="diff-to"]').check()
            await expect(diff.locator("li")).to_have_text(["~ gain: 1 → 2"])
            await expect(diff.locator("li")).to_have_attribute("data-path", "gain")
            await expect(diff).to_contain_text(
                f"From revision {revisions[2]} to revision {revisions[1]}: 1 path"
            )
            # A change made while the key is open comes in newest first; the picks stay.
            await bob.set("lab.cfg", {"gain": 3, "mode": "run", "note": "x"})
            await expect(rows).to_have_count(4, timeout=SOON_MS)
            await expect(rows.first.locator("td.by")).to_have_text(bob_wrote)
            await expect(diff.locator("li")).to_have_text(["~ gain: 1 → 2"])
            await expect(page.locator("#history-plot")).to_be_hidden()  # not a number

            # A removal is a version too.
            await page.click('#state .krow[data-key="tmp.x"]')
            await expect(rows.locator("td.v")).to_have_text(
                ['"b"', "(removed)", '"a"'], timeout=SOON_MS
            )
            await expect(rows.locator("td.by")).to_have_text([alice_wrote, bob_wrote, alice_wrote])
            await expect(diff.locator("li")).to_have_text(['+ (whole value): "b"'])
            await page.click('#state .krow[data-key="lab.visitor"]')
            await expect(rows.locator("td.by")).to_have_text(
                [bob_wrote, "EXPIRY (its ttl ran out)", alice_wrote], timeout=SOON_MS
            )
            await page.click('#state .krow[data-key="lab.seat"]')
            await expect(rows.locator("td.by")).to_have_text(
                [
                    bob_wrote,
                    "SESSION_END (the session it was bound to ended)",
                    re.compile(r"^identity anyone · session [0-9a-f]{8}$"),
                ],
                timeout=SOON_MS,
            )

            # Numbers are plotted: four points, then one point on a minute of time axis.
            plot = page.locator("#history-plot")
            await page.click('#state .krow[data-key="lab.pressure"]')
            # lab.seat's plot (3, then 4) is still up until lab.pressure's history comes
            await expect(plot).to_have_attribute("data-points", "1", timeout=SOON_MS)
            await expect(plot.locator("canvas").first).to_be_visible()
            span = await plot.get_attribute("data-span")
            assert span is not None and 59 <= float(span) <= 61
            await expect(diff).to_contain_text("nothing to compare")

            await page.click('#state .krow[data-key="lab.temperature"]')
            await expect(plot).to_have_attribute("data-points", "4", timeout=SOON_MS)
            await expect(plot.locator("canvas").first).to_be_visible()
            await expect(diff.locator("li")).to_have_text(["~ (whole value): 21.25 → 20.75"])
            await page.locator("#history-block").scroll_into_view_if_needed()
            await screenshot(page, "dashboard-history.png")
            assert errors == []
        finally:
            await alice.close()
            await bob.close()
            if page is not None:
                await page.close()


async def test_a_server_without_history_says_how_to_turn_it_on_and_ttl_counts_down(
    browser: Browser,
) -> None:
    async with running_server(http_port=0) as server:
        client = AsyncClient("127.0.0.1", server.port, name="writer")
        page: Page | None = None
        try:
            await client.set("lab.cfg", {"gain": 1})
            await client.set("lab.visitor", "rita", ttl=600)
            page, errors = await open_dashboard(browser, server)
            await page.click('#state .krow[data-key="lab.cfg"]')
            note = page.locator("#history-note")
            await expect(note).to_contain_text("keeps no history", timeout=SOON_MS)
            await expect(note).to_contain_text("statehub serve --history N")
            await expect(page.locator("#history")).to_be_hidden()
            facts = page.locator("#facts")
            await expect(facts.locator('tr[data-fact="by"] td')).to_contain_text(
                "this server keeps no history"
            )
            await expect(facts.locator('tr[data-fact="expires"] td')).to_have_text("never (no ttl)")

            await page.click('#state .krow[data-key="lab.visitor"]')
            expires = facts.locator('tr[data-fact="expires"] td')
            await expect(expires).to_have_text(re.compile(r"^\d+\.\d s$"), timeout=SOON_MS)
            first = float((await expires.inner_text()).split()[0])
            assert 500 < first <= 600
            await expect(expires).not_to_have_text(f"{first:.1f} s", timeout=SOON_MS)  # ticks
            assert errors == []
        finally:
            await client.close()
            if page is not None:
                await page.close()
