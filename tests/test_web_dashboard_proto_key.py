"""The dashboard decodes every value the server accepts: a map key ``__proto__`` included.

@msgpack/msgpack refuses that key (it would replace a JS object's prototype); the page
decodes it as an own property instead. Driven in Debian's chromium, as
tests/test_web_dashboard.py does.
"""

from __future__ import annotations

from playwright.async_api import Browser, ConsoleMessage, Page, expect

from statehub import AsyncClient
from support.browser import needs_browser
from support.raw_session import running_server
from test_web_dashboard import SOON_MS

pytestmark = needs_browser

ODD = {"__proto__": 1, "inner": {"__proto__": {"polluted": True}}, "list": [{"__proto__": []}]}


def note_console(message: ConsoleMessage, errors: list[str]) -> None:
    """The page's warnings (the session logs error messages so) and errors, except the
    browser's own 404 for a favicon."""
    if message.type == "warning" or (
        message.type == "error" and "Failed to load resource" not in message.text
    ):
        errors.append(message.text)


async def opened(browser: Browser, port: int, errors: list[str]) -> Page:
    page = await browser.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: note_console(message, errors))
    await page.goto(f"http://127.0.0.1:{port}/")
    await expect(page.locator("#status")).to_have_text("live", timeout=SOON_MS)
    return page


async def test_a_proto_map_key_shows_and_the_page_keeps_updating(browser: Browser) -> None:
    async with (
        running_server(http_port=0) as server,
        AsyncClient("127.0.0.1", server.port) as client,
    ):
        errors: list[str] = []
        live = await opened(browser, server.http_port, errors)
        try:
            await client.set("odd.value", ODD)
            row = live.locator('#state .krow[data-key="odd.value"]')
            await expect(row).to_contain_text("__proto__", timeout=SOON_MS)
            await expect(row).to_contain_text("polluted", timeout=SOON_MS)
            await client.set("__proto__", {"__proto__": 2})  # as a state key too
            await expect(live.locator('#state .krow[data-key="__proto__"]')).to_contain_text(
                "2", timeout=SOON_MS
            )
            await client.set("after.it", "still live")  # the page keeps updating
            await expect(live.locator('#state .krow[data-key="after.it"]')).to_contain_text(
                "still live", timeout=SOON_MS
            )
            # Nothing leaked into JavaScript's prototypes.
            assert await live.evaluate("({}).polluted === undefined && [].polluted === undefined")
            # A page opened now gets all of it in its first snapshot.
            fresh = await opened(browser, server.http_port, errors)
            await expect(fresh.locator("#state .krow")).to_have_count(3, timeout=SOON_MS)
            await expect(fresh.locator('#state .krow[data-key="odd.value"]')).to_contain_text(
                "__proto__"
            )
            await client.remove("odd.value")
            await expect(live.locator('#state .krow[data-key="odd.value"]')).to_have_count(
                0, timeout=SOON_MS
            )
            await client.set("after.removal", 3)
            await expect(live.locator('#state .krow[data-key="after.removal"]')).to_have_count(
                1, timeout=SOON_MS
            )
            await fresh.close()
            assert errors == []
        finally:
            await live.close()
