"""Debian's chromium, driven by Playwright, for the tests of pages the web edge serves.

Playwright's own browser download cannot work on these machines; its driver launches
``/usr/bin/chromium`` instead (``make test`` installs it). The ``browser`` fixture
(tests/conftest.py) gives a test one browser, closed after it.
"""

from __future__ import annotations

import shutil

import pytest

from statehub.web.edge import DASHBOARD_DIR

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

#: For a module of browser tests: ``pytestmark = needs_browser``.
needs_browser = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None or not (DASHBOARD_DIR / "app.js").is_file(),
    reason="needs Debian's chromium and the built dashboard (make test installs and builds both)",
)
