"""The mesh service's life on a real broker: alerts and heartbeats, ``statehub serve
--dripline``, and the broker killed and restarted under it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from dripline_mesh.mesh_support import Served, serving
from dripline_mesh.raw_amqp import RawPeer, request_headers
from statehub.client import AsyncClient
from statehub.dripline.broker import TemporaryBroker
from statehub.dripline.client import AsyncDriplineClient, DriplineClient
from statehub.dripline.settings import MeshSettings
from statehub.dripline.wire import Reply
from statehub.endpoints.return_codes import BrokerConnectionError, InvalidRoutingKeyError
from support.polling import eventually, eventually_sync

SERVE = [sys.executable, "-c", "from statehub.cli import main; main()", "serve", "--port", "0"]


class AlertListener:
    """A plain AMQP consumer on the alerts exchange."""

    def __init__(self) -> None:
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []

    def received(self, prefix: str) -> list[tuple[str, Any]]:
        return [
            (message.routing_key or "", json.loads(message.body))
            for message in self.messages
            if (message.routing_key or "").startswith(prefix)
        ]


@pytest.fixture
async def alerts(served: Served, settings: MeshSettings) -> AsyncIterator[AlertListener]:
    listener = AlertListener()
    connection = await aio_pika.connect(settings.url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("alerts", aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue(exclusive=True)
        for key in ("sensor_value.#", "heartbeat.#"):
            await queue.bind(exchange, routing_key=key)

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            listener.messages.append(message)

        await queue.consume(keep, no_ack=True)
        yield listener


async def test_logged_values_are_alerts(
    served: Served, settings: MeshSettings, alerts: AlertListener
) -> None:
    async with AsyncDriplineClient(settings=settings) as dripline:
        await dripline.set("peaches", 2)  # over the mesh
    async with AsyncClient("127.0.0.1", served.server.port) as client:
        await client.endpoint_set("peaches", 3)  # over statehub's own protocol
        await client.endpoint_set("plain", 9)  # not logged: no log_on_set
    await eventually(lambda: len(alerts.received("sensor_value.")) >= 2)
    assert alerts.received("sensor_value.") == [
        ("sensor_value.peaches", {"value_raw": 2, "value_cal": 4}),
        ("sensor_value.peaches", {"value_raw": 3, "value_cal": 6}),
    ]
    first = next(m for m in alerts.messages if m.routing_key == "sensor_value.peaches")
    assert first.headers["message_type"] == 4
    assert first.content_encoding == "application/json"
    assert [e.value_raw for e in served.endpoints.event_log.history("lab.peaches")] == [2, 3]


async def test_heartbeats(served: Served, alerts: AlertListener) -> None:
    await eventually(lambda: len(alerts.received("heartbeat.")) >= 2)  # every 0.2 s here
    for routing_key, payload in alerts.received("heartbeat."):
        assert routing_key == "heartbeat.lab"
        assert payload == {"name": "lab", "id": served.mesh.instance_id}


async def test_broker_restart(
    served: Served,
    settings: MeshSettings,
    rabbitmq: TemporaryBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="statehub.dripline.mesh")
    async with AsyncClient("127.0.0.1", served.server.port) as client:
        noticed: list[dict[str, Any]] = []
        client.connection_lost.add_callback(lambda **details: noticed.append(details))
        dripline = AsyncDriplineClient(settings=settings, timeout=5)
        assert (await dripline.get("peaches")).return_code == 0

        await asyncio.to_thread(rabbitmq.kill)
        await eventually(lambda: not served.mesh.connected, timeout=30)
        # statehub goes on serving its own clients, endpoints included
        assert await client.endpoint_set("peaches", 7) == {"value_raw": 7, "value_cal": 14}
        assert await client.get("lab.peaches") == 7
        with pytest.raises(BrokerConnectionError) as away:  # the dripline client says why
            await dripline.get("peaches")
        assert away.value.code == 101

        await asyncio.to_thread(rabbitmq.start)
        await eventually(lambda: served.mesh.connections >= 2, timeout=60)
        # the same client connects again; the service's queues were declared again
        reply = await dripline.get("peaches")
        assert reply.payload == {"value_raw": 7, "value_cal": 14}
        await dripline.close()
        assert await client.get("lab.peaches") == 7
        assert noticed == []  # statehub's own client never lost its connection
    messages = [record.getMessage() for record in caplog.records]
    assert any("lost the broker" in message for message in messages)
    assert sum("serving lab on" in message for message in messages) >= 1


def test_serve_with_dripline(rabbitmq: TemporaryBroker, tmp_path: Path) -> None:
    config = tmp_path / "lab.yaml"
    config.write_text(
        "name: lab\n"
        "endpoints:\n"
        "  - {name: peaches, initial_value: 0.75, calibration: '2*{}'}\n"
        "dripline_mesh: {heartbeat_interval_s: 5, max_payload_size: 500}\n"
    )
    log = (tmp_path / "serve.log").open("w")  # a file: a full stderr pipe would block it
    process = subprocess.Popen(
        [*SERVE, "-v", "--config", str(config), "--dripline", rabbitmq.url],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        for _ in range(10):  # bounded: the first lines say it serves
            line = process.stdout.readline()
            if "endpoints from the config" in line or not line:
                break
        assert "endpoints from the config" in line
        with DriplineClient(rabbitmq.url, timeout=30) as client:

            def answered() -> Reply | None:
                try:
                    return client.get("peaches", timeout=5)
                except InvalidRoutingKeyError:  # its queue is not bound yet
                    return None

            # the mesh connects in the background
            reply = eventually_sync(answered, "the served endpoint answering", timeout=30)
            assert reply.payload == {"value_raw": 0.75, "value_cal": 1.5}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
            log.close()
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
    assert "dripline mesh: serving lab on" in (tmp_path / "serve.log").read_text()


def test_serve_refuses_bad_mesh_settings(tmp_path: Path) -> None:
    config = tmp_path / "lab.yaml"
    config.write_text(
        "name: lab\nendpoints: [{name: peaches}]\ndripline_mesh: {broker_port: 99999, brokr: x}\n"
    )
    result = subprocess.run(
        [*SERVE, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "dripline_mesh: option 'broker_port'" in result.stderr
    assert "dripline_mesh: option 'brokr': unknown option" in result.stderr
    result = subprocess.run(
        [*SERVE, "--dripline", "amqp://localhost/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--dripline needs --config" in result.stderr


LAB_NAMES_ONLY = "name: lab\nendpoints: [{name: peaches, initial_value: 1}]\n"

NODE = """
providers:
  - name: kv1
    endpoints:
      - {name: foo, initial_value: 1}
      - {name: ticker, initial_value: 5, log_interval: 0.05, max_interval: 0.1,
         alert_routing_key: lab_status}
  - name: kv2
    endpoints: [{name: bar, initial_value: 2}]
"""


async def test_each_top_level_provider_is_a_service(settings: MeshSettings) -> None:
    async with (
        serving(NODE, settings) as served,
        AsyncDriplineClient(settings=settings) as client,
        RawPeer(settings.url) as peer,
    ):
        assert [node.name for node in served.mesh.nodes] == ["kv1", "kv2"]
        assert (await client.get("foo")).payload == {"value_raw": 1, "value_cal": 1}
        assert (await client.get("kv2.bar")).payload == {"value_raw": 2, "value_cal": 2}
        assert (await client.get("kv1")).payload == {"endpoints": ["kv1.foo", "kv1.ticker"]}
        correlation_id = await peer.publish("broadcast", b"{}", request_headers(9, "ping"))
        replies = await peer.wait_replies(correlation_id, 2)
        senders = sorted(reply.headers["sender_info"]["service_name"] for reply in replies)  # type: ignore[index]
        assert senders == ["kv1", "kv2"]


async def test_scheduled_logging_with_its_own_alert_routing_key(settings: MeshSettings) -> None:
    listener = AlertListener()
    connection = await aio_pika.connect(settings.url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("alerts", aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="lab_status.#")

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            listener.messages.append(message)

        await queue.consume(keep, no_ack=True)
        async with serving(NODE, settings):
            # logged by the scheduler's worker thread every max_interval (0.1 s)
            await eventually(lambda: len(listener.received("lab_status.")) >= 2)
    for routing_key, payload in listener.received("lab_status."):
        assert (routing_key, payload) == ("lab_status.ticker", {"value_raw": 5, "value_cal": 5})


async def test_a_second_statehub_with_the_same_service_waits_its_turn(
    served: Served, settings: MeshSettings, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(LAB_NAMES_ONLY, settings, connect=False) as second:
        # the broker refuses it the exclusive queue "lab": it logs that and retries
        await eventually(lambda: "refused the set-up" in caplog.text, timeout=30)
        assert not second.mesh.connected
        await served.mesh.stop()  # the first one leaves the mesh
        await second.mesh.wait_connected(30)
        async with AsyncDriplineClient(settings=settings) as client:
            assert (await client.get("peaches")).payload == {"value_raw": 1, "value_cal": 1}
