"""The dashboard benchmark's plumbing: a ``statehub serve`` process, a writer, pages in
chromium, every figure measured. Not a measurement: nothing here is timed."""

from __future__ import annotations

import pytest

from statehub.bench import dashboard
from support.browser import needs_browser

pytestmark = needs_browser


def test_every_figure_is_measured_for_each_number_of_dashboards() -> None:
    results = dashboard.run(keys=300, changing=30, dashboards=(0, 1), window=0.5)
    figures = {result.workload.split(",")[0]: result.figure for result in results}
    assert figures["key changes written"] > 0
    assert figures["server CPU"] > 0
    assert "server CPU per dashboard (1 open)" in figures
    assert figures["bytes/s to the page per dashboard (1 open)"] > 0


def test_the_baseline_without_dashboards_comes_first() -> None:
    with pytest.raises(ValueError, match=r"dashboards must start with 0 .* got \(1, 2\)"):
        dashboard.run(dashboards=(1, 2))
