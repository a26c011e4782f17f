"""statehub's dripline client (async, sync and CLI) against statehub's own mesh service
and against a minimal dripline service written here with the plain AMQP client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from click.testing import CliRunner

from dripline_mesh.mesh_support import PumpOverheatedError, Served
from statehub.cli import main
from statehub.dripline.broker import TemporaryBroker
from statehub.dripline.client import AsyncDriplineClient, DriplineClient
from statehub.dripline.settings import MeshSettings
from statehub.endpoints.return_codes import (
    AccessDeniedError,
    AmqpError,
    ClientTimeoutError,
    EndpointError,
    InvalidRoutingKeyError,
    InvalidSpecifierError,
)


async def test_async_client_against_statehub(served: Served, settings: MeshSettings) -> None:
    async with AsyncDriplineClient(settings=settings) as client:
        reply = await client.get("peaches")
        assert (reply.payload, reply.return_code) == ({"value_raw": 0.75, "value_cal": 1.5}, 0)
        reply = await client.set("peaches", 3)
        assert reply.payload == {"value_raw": 3, "value_cal": 6}
        assert served.endpoints.state.get("lab.peaches") == 3

        key = (await client.cmd("peaches", "lock")).payload["key"]  # type: ignore[index]
        with pytest.raises(AccessDeniedError) as denied:
            await client.set("peaches", 4)
        assert denied.value.code == 307
        assert "locked" in denied.value.reason
        assert (await client.set("peaches", 4, lockout_key=key)).return_code == 0
        assert (await client.cmd("peaches", "unlock", lockout_key=key)).return_code == 0
        warning = await client.cmd("peaches", "unlock")
        assert (warning.return_code, warning.payload) == (
            1,
            {"unlocked": False, "warning": "lab.peaches is already unlocked"},
        )  # a warning is returned, with its code, not raised

        with pytest.raises(InvalidSpecifierError):
            await client.get("peaches", "colour")
        with pytest.raises(PumpOverheatedError) as hot:
            await client.cmd("pump", "overheat")
        assert hot.value.code == 1234
        reply = await client.cmd("pump", "scale", 3, offset=1)
        assert reply.payload == {"value_raw": 31}

        big = "y" * 1000  # over the test mesh's 200-byte maximum: chunked both ways
        assert (await client.set("plain", big)).return_code == 0
        assert (await client.get("plain")).payload == {"value_raw": big, "value_cal": big}

        replies = await asyncio.gather(*(client.get("plain", "value_raw") for _ in range(32)))
        assert all(reply.payload == {"value_raw": big} for reply in replies)


async def test_client_errors_of_its_own(served: Served, settings: MeshSettings) -> None:
    async with AsyncDriplineClient(settings=settings) as client:
        with pytest.raises(InvalidRoutingKeyError) as unroutable:
            await client.get("nobody_home")
        assert "nobody_home" in str(unroutable.value)
        # a queue that takes requests and never answers
        connection = await aio_pika.connect(settings.url)
        async with connection:
            channel = await connection.channel()
            silent = await channel.declare_queue(exclusive=True)
            exchange = await channel.declare_exchange("requests", aio_pika.ExchangeType.TOPIC)
            await silent.bind(exchange, routing_key="silent.#")
            with pytest.raises(ClientTimeoutError) as late:
                await client.get("silent", timeout=0.5)  # connecting keeps the default
            assert late.value.code == 404

            # an exchange of that name exists with another type: the broker refuses
            await channel.declare_exchange("direct_requests", aio_pika.ExchangeType.DIRECT)
            elsewhere = dataclasses.replace(settings, requests_exchange="direct_requests")
            with pytest.raises(AmqpError) as refused:
                await AsyncDriplineClient(settings=elsewhere).connect()
            assert refused.value.code == 100
            assert "direct_requests" in str(refused.value)


def test_sync_client_and_cli(served_in_thread: tuple[Served, MeshSettings], tmp_path: Path) -> None:
    _, settings = served_in_thread
    with DriplineClient(settings=settings) as client:
        reply = client.get("status")
        assert (reply.payload, reply.return_code) == ({"value_raw": "CLOSE", "value_cal": "on"}, 0)
        assert client.set("status", "OPEN").return_code == 0
        with pytest.raises(EndpointError) as refused:
            client.set("status", "AJAR")
        assert refused.value.code == 304

    runner = CliRunner()
    broker = ["--broker", settings.url]
    result = runner.invoke(main, ["dripline", "get", "status", *broker])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"value_raw": "OPEN", "value_cal": "off"}
    result = runner.invoke(main, ["dripline", "set", "plain", "[1, 2]", *broker])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["dripline", "get", "plain", "-s", "value_raw", *broker])
    assert json.loads(result.stdout) == {"value_raw": [1, 2]}
    result = runner.invoke(
        main, ["dripline", "cmd", "pump", "-s", "scale", "2", "offset=1", *broker]
    )
    assert json.loads(result.stdout) == {"value_raw": 21}
    result = runner.invoke(main, ["dripline", "cmd", "plain", "-s", "unlock", *broker])
    assert result.exit_code == 0
    assert "return code 1: lab.plain is already unlocked" in result.stderr
    result = runner.invoke(main, ["dripline", "get", "plain", "-s", "nope", *broker])
    assert result.exit_code == 1
    assert "310 invalid specifier" in result.output
    result = runner.invoke(
        main, ["dripline", "get", "plain", "--broker", "amqp://127.0.0.1:1/", "--timeout", "2"]
    )
    assert result.exit_code == 1
    assert "101 broker connection" in result.output

    # the broker from a configuration file's dripline_mesh block
    config = tmp_path / "mesh.yaml"
    config.write_text(f"dripline_mesh: {{broker: 127.0.0.1, broker_port: {settings.port}}}\n")
    result = runner.invoke(main, ["dripline", "get", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["value_raw"] == "OPEN"
    config.write_text("dripline_mesh: {brocker: 127.0.0.1}\n")
    result = runner.invoke(main, ["dripline", "get", "status", "--config", str(config)])
    assert result.exit_code == 1
    assert "mesh.yaml: dripline_mesh: option 'brocker': unknown option" in result.output


class MinimalService:
    """A dripline service written with the plain AMQP client, answering by hand."""

    def __init__(self) -> None:
        self.requests: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def run(self, url: str) -> AsyncIterator[None]:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange("requests", aio_pika.ExchangeType.TOPIC)
            queue = await channel.declare_queue("thermo", exclusive=True, auto_delete=True)
            for key in ("thermo.#", "broadcast.#"):
                await queue.bind(exchange, routing_key=key)

            async def answer(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                self.requests.append(message)
                headers = message.headers or {}
                operation, specifier = headers["message_operation"], headers["specifier"]
                code, text, payload = 0, "ok", {"value_raw": 21.5, "value_cal": 21.5}
                if operation == 0:
                    code, text, payload = 1001, "heater disconnected", None
                elif specifier == "warn":
                    code, text, payload = 3, "dry run", {"would": "do"}
                body = json.dumps(payload).encode()
                pieces = [body]
                if specifier == "big":
                    body = json.dumps({"values": list(range(3000))}).encode()
                    pieces = [body[i : i + 4000] for i in range(0, len(body), 4000)]
                message_uuid = str(uuid.uuid4())
                for index, piece in enumerate(pieces):
                    await exchange.publish(
                        aio_pika.Message(
                            piece,
                            headers={
                                "message_type": 2,
                                "return_code": code,
                                "return_message": text,
                                "timestamp": "2026-01-01T00:00:00.000Z",
                                "sender_info": {"service_name": "thermo"},
                            },
                            content_encoding="application/json",
                            correlation_id=message.correlation_id,
                            message_id=f"{message_uuid}/{index}/{len(pieces)}",
                        ),
                        routing_key=message.reply_to or "",
                    )

            await queue.consume(answer, no_ack=True)
            yield


@pytest.fixture
async def thermo(rabbitmq: TemporaryBroker) -> AsyncIterator[MinimalService]:
    service = MinimalService()
    running = service.run(rabbitmq.url)
    await anext(running)
    yield service
    await running.aclose()


async def test_client_against_a_minimal_dripline_service(
    thermo: MinimalService, rabbitmq: TemporaryBroker
) -> None:
    async with AsyncDriplineClient(rabbitmq.url) as client:
        reply = await client.get("thermo")
        assert (reply.payload, reply.return_code, reply.return_message) == (
            {"value_raw": 21.5, "value_cal": 21.5},
            0,
            "ok",
        )
        assert (await client.cmd("thermo", "warn")).return_code == 3
        with pytest.raises(EndpointError) as failed:
            await client.set("thermo", 30, lockout_key=str(uuid.UUID(int=7)))
        assert (failed.value.code, failed.value.reason) == (1001, "heater disconnected")
        big = await client.cmd("thermo", "big")
        assert big.payload == {"values": list(range(3000))}

    sent: list[dict[str, Any]] = [dict(message.headers or {}) for message in thermo.requests]
    get, _, set_, _ = sent
    assert (get["message_type"], get["message_operation"], get["specifier"]) == (3, 1, "")
    assert get["lockout_key"] == "00000000-0000-0000-0000-000000000000"
    assert set_["message_operation"] == 0
    assert set_["lockout_key"] == str(uuid.UUID(int=7))
    assert set(get["sender_info"]) == {"exe", "hostname", "username", "service_name", "versions"}
    first = thermo.requests[0]
    assert first.content_encoding == "application/json"
    assert first.reply_to and first.correlation_id
    assert json.loads(thermo.requests[2].body) == {"values": [30]}
