"""One real RabbitMQ broker for every dripline test (started once, ~6 s), and statehub
servers serving endpoints on it."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from dripline_mesh.mesh_support import LAB, Served, serving
from statehub import StateServer
from statehub.dripline.broker import TemporaryBroker
from statehub.dripline.mesh import MeshService
from statehub.dripline.settings import MeshSettings, mesh_settings
from statehub.endpoints.attach import endpoints_running
from statehub.endpoints.config import parse_config
from support.brokers import temporary_broker


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[TemporaryBroker]:
    yield from temporary_broker()


@pytest.fixture
def settings(rabbitmq: TemporaryBroker) -> MeshSettings:
    """The test broker, small chunks (so chunking is easy to reach), quick heartbeats."""
    return dataclasses.replace(
        mesh_settings(rabbitmq.url, environ={}),
        max_payload_size=200,
        heartbeat_interval=0.2,
        chunk_timeout=0.3,
    )


@pytest.fixture
async def served(settings: MeshSettings) -> AsyncIterator[Served]:
    """A statehub server on 127.0.0.1 serving LAB's endpoints, on the mesh too."""
    async with serving(LAB, settings) as served:
        yield served


@pytest.fixture
def served_in_thread(settings: MeshSettings) -> Iterator[tuple[Served, MeshSettings]]:
    """``served`` with its own event loop in a thread, for blocking clients in the test."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    holder: list[Served] = []
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def run() -> None:
        try:
            server = StateServer(address="127.0.0.1", port=0)
            config = parse_config(LAB, "lab.yaml")
            async with (
                server,
                endpoints_running(server, config) as endpoints,
                MeshService(endpoints, settings) as mesh,
            ):
                await mesh.wait_connected(30)
                holder.append(Served(server, endpoints, mesh))
                ready.set()
                await stop.wait()
        except BaseException as error:
            failure.append(error)
            raise
        finally:
            ready.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "the served thread did not start in 60 s"
        if failure:
            raise failure[0]
        yield holder[0], settings
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()
