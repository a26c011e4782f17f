"""The dashboard decodes every value the server accepts (issue 24 point 9): bytes show and
are edited as ``{"$bytes": base64}`` and are written back as bytes. Debian's chromium."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from statehub import DictionaryChange
from support.browser import needs_browser
from support.polling import eventually
from support.raw_session import running_server
from test_web_dashboard_operator import SOON_MS, open_dashboard

pytestmark = needs_browser


async def test_a_bytes_value_shows_and_is_edited_as_base64_and_stays_bytes(
    browser: Browser,
) -> None:
    async with running_server(http_port=0) as server:
        change = DictionaryChange({"packed": b"\x00\x01\xff", "mixed": {"raw": [b"\x07"], "n": 1}})
        server.state.update_state(None, change)
        page, errors = await open_dashboard(browser, server)
        try:
            row = page.locator('#state .krow[data-key="packed"]')
            await expect(row).to_contain_text('<3 bytes> {"$bytes":"AAH/"}', timeout=SOON_MS)
            await expect(page.locator('#state .krow[data-key="mixed"]')).to_contain_text(
                '{"raw":[{"$bytes":"Bw=="}],"n":1}'
            )
            await row.click()
            editor = page.locator("#write-value")
            await expect(editor).to_have_value('{\n  "$bytes": "AAH/"\n}', timeout=SOON_MS)
            await page.fill("#write-value", '{"$bytes": "AQID"}')
            await expect(page.locator("#preview .after")).to_have_text(
                '+ <3 bytes> {"$bytes":"AQID"}'
            )
            await page.click("#save")
            await expect(page.locator("#write-result")).to_contain_text("set at revision")
            await eventually(lambda: server.state.get("packed") == b"\x01\x02\x03")
            assert errors == []
        finally:
            await page.close()
