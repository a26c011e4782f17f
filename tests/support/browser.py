"""Debian's chromium, driven by Playwright, for the tests of pages the web edge serves.

Playwright's own browser download cannot work on these machines; its driver launches
``/usr/bin/chromium`` instead (``make test`` installs it), with the arguments
``statehub bench web`` uses too. The ``browser`` fixture
(tests/conftest.py) gives a test one browser, closed after it.
"""

from __future__ import annotations

import shutil

import pytest

from statehub.bench.dashboard import CHROMIUM, CHROMIUM_ARGS
from statehub.web.edge import DASHBOARD_DIR

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "needs_browser"]

#: For a module of browser tests: ``pytestmark = needs_browser``.
needs_browser = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None or not (DASHBOARD_DIR / "app.js").is_file(),
    reason="needs Debian's chromium and the built dashboard (make test installs and builds both)",
)
