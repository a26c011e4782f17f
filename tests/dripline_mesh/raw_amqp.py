"""A plain AMQP peer (aio-pika, nothing of statehub's dripline code) that publishes
hand-made dripline messages and collects what comes back, for conformance tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

NIL = "00000000-0000-0000-0000-000000000000"


def request_headers(
    operation: int, specifier: str = "", lockout_key: str = NIL, **extra: Any
) -> dict[str, Any]:
    """Headers as the dripline reference lists them, written out by hand."""
    return {
        "message_type": 3,
        "message_operation": operation,
        "specifier": specifier,
        "lockout_key": lockout_key,
        "timestamp": "2026-01-01T00:00:00.000Z",
        "sender_info": {
            "exe": "/usr/bin/dl-agent",
            "hostname": "test",
            "username": "tester",
            "service_name": "raw-test",
            "versions": {},
        },
        **extra,
    }


class RawPeer:
    """Publishes on ``requests`` and receives on its own reply queue."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.replies: dict[str, list[AbstractIncomingMessage]] = {}
        self._arrived = asyncio.Condition()

    async def __aenter__(self) -> RawPeer:
        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.requests = await self.channel.declare_exchange("requests", aio_pika.ExchangeType.TOPIC)
        self.alerts = await self.channel.declare_exchange("alerts", aio_pika.ExchangeType.TOPIC)
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.requests, routing_key=queue.name)
        self.reply_to = queue.name
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with self._arrived:
            self.replies.setdefault(message.correlation_id or "", []).append(message)
            self._arrived.notify_all()

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any],
        *,
        content_encoding: str | None = "application/json",
        message_id: str | None = None,
        reply: bool = True,
    ) -> str:
        correlation_id = str(uuid.uuid4())
        await self.requests.publish(
            aio_pika.Message(
                body,
                headers=headers,
                content_encoding=content_encoding,
                correlation_id=correlation_id,
                reply_to=self.reply_to if reply else None,
                message_id=message_id or str(uuid.uuid4()),
            ),
            routing_key=routing_key,
            mandatory=True,
        )
        return correlation_id

    async def wait_replies(
        self, correlation_id: str, count: int = 1, timeout: float = 20
    ) -> list[AbstractIncomingMessage]:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.replies.get(correlation_id, [])) >= count)
            return list(self.replies[correlation_id])

    async def request(
        self, routing_key: str, operation: int, payload: Any = None, **headers: Any
    ) -> tuple[dict[str, Any], Any, AbstractIncomingMessage]:
        """One request, one (unsplit) reply: ``(headers, payload, message)``."""
        body = b"" if payload is None else json.dumps(payload).encode()
        correlation_id = await self.publish(
            routing_key, body, request_headers(operation, **headers)
        )
        (reply,) = await self.wait_replies(correlation_id)
        decoded = json.loads(reply.body) if reply.body else None
        return dict(reply.headers), decoded, reply
