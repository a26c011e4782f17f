"""The dashboard's health panel under ``--auth``: /metrics needs the admin right ``metrics``.

The page sends the token it signed in with on its /metrics and /readyz requests; an
identity without the right sees why the figures are missing. Debian's chromium, as in
tests/test_web_dashboard.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from support.auth import TOKENS, auth_server
from support.browser import needs_browser
from test_web_dashboard import SOON_MS

pytestmark = needs_browser


@pytest.mark.parametrize(
    ("user", "shown"),
    [("walt", "lacks the admin right 'metrics'"), ("ada", "ready")],
)
async def test_the_health_panel_shows_figures_only_to_the_metrics_right(
    browser: Browser, tmp_path: Path, user: str, shown: str
) -> None:
    async with auth_server(tmp_path, http_port=0) as server:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            await page.goto(f"http://127.0.0.1:{server.http_port}/")
            await page.fill("#signin-token", TOKENS[user])
            await page.click("#signin button[type=submit]")
            await expect(page.locator("#status")).to_have_text("live", timeout=SOON_MS)
            await expect(page.locator("#health")).to_contain_text(shown, timeout=SOON_MS)
            if user == "ada":
                await expect(page.locator('#health tr[data-figure="sessions"]')).to_contain_text(
                    "1"
                )
            assert errors == []
        finally:
            await page.close()
