"""The dashboard's Force release of locks and leases (issue 23), in Debian's chromium.

Under ``--auth``: an admin (the admin right ``force_unlock``) takes a lock and a lease away
from a client that holds them, and that client sees them lost; a viewer without the right
sees the buttons, none of them active. The screenshot goes to artefacts/ (docs/images/
holds a copy).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from statehub import AsyncClient
from statehub.errors import LockFailedError
from statehub.serving.state_server import StateServer
from support.auth import TOKENS, auth_server
from support.browser import needs_browser
from support.polling import DEADLINE, eventually
from test_web_dashboard_operator import SOON_MS, screenshot

pytestmark = needs_browser


async def signed_in(browser: Browser, server: StateServer, user: str) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    # Page errors only: walt's /metrics request is refused (403), as the health panel says.
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"http://127.0.0.1:{server.http_port}/")
    await page.fill("#signin-token", TOKENS[user])
    await page.click("#signin button[type=submit]")
    await expect(page.locator("#status")).to_have_text("live", timeout=SOON_MS)
    return page, errors


async def test_an_admin_force_releases_a_lock_and_a_lease_and_a_viewer_cannot(
    browser: Browser, tmp_path: Path
) -> None:
    async with (
        auth_server(tmp_path, http_port=0) as server,
        AsyncClient(
            "127.0.0.1", server.port, name="hung-robot", credential=TOKENS["walt"]
        ) as robot,
    ):
        lost_leases: list[str] = []
        robot.leases_lost.add_callback(lambda keys: lost_leases.extend(keys))
        assert await robot.attempt_update_locks({"lab/w/arm": 600})
        holding, done = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with robot.get_lock("locks/w/run-42"):
                holding.set()
                await done.wait()

        held = asyncio.ensure_future(hold())
        await asyncio.wait_for(holding.wait(), DEADLINE)
        viewer, viewer_errors = await signed_in(browser, server, "walt")
        admin, admin_errors = await signed_in(browser, server, "ada")
        try:
            lock_button = '#locks button.force-release[data-key="locks/w/run-42"]'
            lease_button = '#leases button.force-release[data-key="lab/w/arm"]'
            for page in (viewer, admin):
                await expect(page.locator(lock_button)).to_have_count(1, timeout=SOON_MS)
                await expect(page.locator(lease_button)).to_have_count(1, timeout=SOON_MS)
            for button in (lock_button, lease_button):
                await expect(viewer.locator(button)).to_be_disabled()
                await expect(viewer.locator(button)).to_have_attribute(
                    "title", "needs the admin right 'force_unlock'"
                )
            assert await viewer.locator("button.force-release:enabled").count() == 0

            await admin.click(lock_button)
            await expect(admin.locator("#confirm-text")).to_have_text(
                "Force-release the lock on locks/w/run-42? Its holder is told it lost it."
            )
            await expect(admin.locator("#confirm-list")).to_contain_text("hung-robot (walt)")
            await screenshot(admin, "dashboard-force-release.png")
            await admin.click("#confirm-ok")
            await expect(admin.locator("#lock-force-result")).to_have_text(
                "lock on locks/w/run-42 force-released (holder told)"
            )
            done.set()
            with pytest.raises(LockFailedError, match=r"force-released by dashboard \(ada\)"):
                await asyncio.wait_for(held, DEADLINE)
            await expect(admin.locator(lock_button)).to_have_count(0, timeout=SOON_MS)

            await admin.click(lease_button)
            await admin.click("#confirm-ok")
            await expect(admin.locator("#lease-force-result")).to_have_text(
                "lease on lab/w/arm force-released (holder told)"
            )
            await eventually(lambda: lost_leases == ["lab/w/arm"])
            assert server.state.leases() == []
            assert viewer_errors == [] and admin_errors == []
        finally:
            done.set()
            await asyncio.gather(held, return_exceptions=True)
            await viewer.close()
            await admin.close()
