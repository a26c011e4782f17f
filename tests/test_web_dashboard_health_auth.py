"""The dashboard's health panel under ``--auth``: /metrics needs the admin right ``metrics``.

The page sends the token it signed in with on its /metrics and /readyz requests; an
identity without the right sees why the figures are missing. Debian's chromium, as in
tests/test_web_dashboard.py.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from auth_support import TOKENS, auth_server
from statehub.web.edge import DASHBOARD_DIR
from test_web_dashboard import CHROMIUM, CHROMIUM_ARGS, SOON_MS

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None or not (DASHBOARD_DIR / "app.js").is_file(),
    reason="needs Debian's chromium and the built dashboard (make test installs and builds both)",
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


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
