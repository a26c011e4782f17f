from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from statehub import AsyncClient
from statehub.serving.state_server import StateServer
from support.clock import FakeClock
from support.transports import CLIENT_TRANSPORTS, Transport

if TYPE_CHECKING:
    from playwright.async_api import Browser


@pytest.fixture
def clock() -> FakeClock:
    """The tests' one fake clock (tests/support/clock.py), at 1000.0 until advanced."""
    return FakeClock()


#: Test modules whose subject is another program's behaviour with statehub (kill -9 and
#: recovery, Redis and Sentinel failovers, RabbitMQ, chromium, pip and the package index,
#: benchmarks end to end): marked ``system`` and run on Python 3.11 only, while every
#: other test runs on 3.11, 3.12 and 3.13 (docs/development.md, ``make test``). A single
#: test of another module carries ``@pytest.mark.system`` itself (test_edge_matrix's dripline
#: row, which starts RabbitMQ).
SYSTEM_TEST_MODULES = frozenset(
    {
        "test_packaging",
        "test_momotor",
        "test_durability_crash",
        "test_redis_sentinel",
        "test_redis_sentinel_rollback",
        "test_redis_cluster",
        "test_redis_commands",
        "test_redis_fault_history",
        "test_redis_failover_history",
        "test_redis_history_loss",
        "test_redis_zombie",
        "test_web_dashboard",
        "test_web_dashboard_operator",
        "test_web_dashboard_proto_key",
        "test_web_dashboard_health_auth",
        "test_web_dashboard_force_release",
        "test_web_dashboard_bytes",
        "test_web_origin",
        "test_hostile_clients",
        "test_bench_fanout",
        "test_bench_client",
        "test_bench_room",
        "test_bench_dashboard",
        "test_dripline_client",
        "test_dripline_conformance",
        "test_dripline_mesh",
        "test_nanover_client",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SYSTEM_TEST_MODULES:
            item.add_marker(pytest.mark.system)


@pytest.fixture
async def server() -> AsyncIterator[StateServer]:
    """A StateServer (memory store) on 127.0.0.1, in the test's own event loop (a module
    that needs another kind of server defines its own ``server``)."""
    async with StateServer(address="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture(params=CLIENT_TRANSPORTS, ids=lambda transport: transport.name)
def transport(request: pytest.FixtureRequest) -> Transport:
    """Each client test using it runs over the default transport (plain TCP) and gRPC
    (tests/support/transports.py)."""
    chosen: Transport = request.param
    return chosen


@pytest.fixture
async def client(server: StateServer, transport: Transport) -> AsyncIterator[AsyncClient]:
    """An AsyncClient connected to ``server`` over ``transport``."""
    async with AsyncClient(transport.url(server)) as connected:
        yield connected


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless (tests/support/browser.py), closed after the test."""
    from playwright.async_api import async_playwright

    from support.browser import CHROMIUM, CHROMIUM_ARGS

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
