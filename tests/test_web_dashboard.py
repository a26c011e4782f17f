"""The dashboard in a real headless browser (Debian's chromium driven by Playwright).

The page is the built dashboard (``make dashboard``, which ``make test`` runs first); it
talks to the server over the WebSocket session protocol only. A screenshot of the page
with everything on it is saved as artefacts/dashboard.png.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from statehub import AsyncClient, DictionaryChange
from statehub.endpoints.attach import endpoints_running
from statehub.endpoints.config import load_config
from support.auth import TOKENS, auth_server, identities
from support.browser import needs_browser
from support.raw_session import running_server

ARTEFACTS = Path(__file__).parent.parent / "artefacts"
FIXTURES = Path(__file__).parent / "fixtures"
#: Deadline for what the page should show soon (the subscription sends within 0.1 s; the
#: rest is rendering, on a machine other jobs share).
SOON_MS = 5_000

pytestmark = needs_browser


async def open_dashboard(browser: Browser, port: int) -> Page:
    page = await browser.new_page(viewport={"width": 1500, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"http://127.0.0.1:{port}/")
    await expect(page.locator("#status")).to_have_text("live", timeout=SOON_MS)
    assert errors == []
    return page


async def test_the_dashboard_shows_state_leases_commands_and_endpoint_history(
    browser: Browser,
) -> None:
    config = load_config(FIXTURES / "endpoints_dripline.yaml")
    async with (
        running_server(http_port=0) as server,
        endpoints_running(server, config) as endpoints,
    ):
        server.register_command("lab/ping", lambda times: {"pong": times}, {"times": 2})
        for value in (0.5, 1.25, 0.75, 1.5):
            endpoints.set("my_store.peaches", value)  # logged on set: history to plot
        page = await open_dashboard(browser, server.http_port)
        client = AsyncClient("127.0.0.1", server.port)
        try:
            await client.set("sample.written", {"by": "a client", "values": [1, 2, 3]})
            row = page.locator('#state .krow[data-key="sample.written"]')
            await expect(row).to_contain_text("a client", timeout=SOON_MS)

            await page.fill("#prefix", "sample.")
            await expect(page.locator("#state .krow:visible")).to_have_count(1)
            await page.fill("#prefix", "")

            assert await client.attempt_update_locks({"sample.leased": 120})
            lease = page.locator('#leases tr[data-key="sample.leased"] .countdown')
            await expect(lease).to_have_text(re.compile(r"^1[01]\d\.\d$"), timeout=SOON_MS)
            first = float(await lease.inner_text())
            await expect(lease).not_to_have_text(f"{first:.1f}", timeout=SOON_MS)
            assert float(await lease.inner_text()) < first

            command = page.locator('form.command[data-command="lab/ping"]')
            await expect(command.locator('input[name="times"]')).to_have_value("2")
            await command.locator("button").click()
            await expect(command.locator(".result")).to_have_text(
                '{\n  "pong": 2\n}', timeout=SOON_MS
            )

            await page.click("#new-key")
            await page.fill("#write-key", "sample.from-page")
            await page.fill("#write-value", '{"typed": true}')
            await page.click("#write-form button[type=submit]")
            await expect(page.locator("#write-result")).to_contain_text("set at revision")
            assert await client.get("sample.from-page") == {"typed": True}

            endpoint = page.locator('.endpoint[data-endpoint="my_store.peaches"]')
            await expect(endpoint.locator(".values")).to_contain_text(
                "calibrated 3", timeout=SOON_MS
            )
            await expect(endpoint.locator(".lockout")).to_have_text("unlocked")
            await expect(endpoint.locator("canvas").first).to_be_visible(timeout=SOON_MS)
            points = await endpoint.locator(".plot").get_attribute("data-points")
            assert points is not None and int(points) >= 4

            ARTEFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=ARTEFACTS / "dashboard.png", full_page=True)
        finally:
            await client.close()
            await page.close()


async def test_a_lease_of_the_dashboard_can_be_released_from_the_page(browser: Browser) -> None:
    async with running_server(http_port=0) as server:
        page = await open_dashboard(browser, server.http_port)
        try:
            await page.fill("#lease-key", "held.here")
            await page.click("#lease-form button[type=submit]")
            row = page.locator('#leases tr[data-key="held.here"]')
            await expect(row).to_contain_text("this dashboard", timeout=SOON_MS)
            assert [lease.key for lease in server.state.leases()] == ["held.here"]
            await row.locator("button").click()
            await expect(row).to_have_count(0, timeout=SOON_MS)
            assert server.state.leases() == []
        finally:
            await page.close()


async def test_under_auth_the_dashboard_signs_in_with_a_token_and_signs_out(
    browser: Browser, tmp_path: Path
) -> None:
    async with auth_server(tmp_path, http_port=0) as server:
        page = await browser.new_page()
        try:
            await page.goto(f"http://127.0.0.1:{server.http_port}/")
            await expect(page.locator("#status")).to_have_text(
                "sign in to connect", timeout=SOON_MS
            )
            await expect(page.locator("#signin-reason")).to_have_text("this server wants a token")

            await page.fill("#signin-token", "not-a-token")
            await page.click("#signin button[type=submit]")
            await expect(page.locator("#status")).to_have_text(
                "sign in to connect", timeout=SOON_MS
            )
            await expect(page.locator("#signin-reason")).to_contain_text("token")

            await page.fill("#signin-token", TOKENS["walt"])
            await page.click("#signin button[type=submit]")
            await expect(page.locator("#status")).to_have_text("live", timeout=SOON_MS)
            await expect(page.locator("#identity")).to_have_text("signed in as walt")
            await expect(page.locator("#signin")).to_be_hidden()

            await page.click("#new-key")
            await page.fill("#write-key", "lab/w/from-page")
            await page.fill("#write-value", "7")
            await page.click("#write-form button[type=submit]")
            await expect(page.locator("#write-result")).to_contain_text("set at revision")
            assert server.state.get("lab/w/from-page") == 7

            await page.click("#signout")
            await expect(page.locator("#status")).to_have_text(
                "sign in to connect", timeout=SOON_MS
            )
        finally:
            await page.close()


async def test_an_anonymous_dashboard_shows_what_the_anonymous_role_may_and_offers_sign_in(
    browser: Browser, tmp_path: Path
) -> None:
    async with auth_server(tmp_path, identities(anonymous="reader"), http_port=0) as server:
        server.state.update_state(None, DictionaryChange({"lab/seen": 1, "hidden": 2}))
        page = await open_dashboard(browser, server.http_port)
        try:
            await expect(page.locator("#identity")).to_have_text("anonymous")
            await expect(page.locator("#signin")).to_be_visible()
            await expect(page.locator('#state .krow[data-key="lab/seen"]')).to_have_count(1)
            await expect(page.locator('#state .krow[data-key="hidden"]')).to_have_count(0)

            # A reader has no write right: read-only, and no active write button.
            await expect(page.locator("#readonly")).to_be_checked()
            await expect(page.locator("#readonly")).to_be_disabled()
            await page.click('#state .krow[data-key="lab/seen"]')
            await expect(page.locator("#write-value")).to_have_value("1", timeout=SOON_MS)
            for button in ("#new-key", "#bulk-remove", "#save", "#remove-key", "#clear-leases"):
                await expect(page.locator(button)).to_be_disabled()
        finally:
            await page.close()
