"""The mesh edge: statehub's endpoints as dripline services on a RabbitMQ broker.

Each top-level service of the configuration (the named root, or each top-level provider
when the root has no name) gets an exclusive auto-delete queue named after it, bound on
the ``requests`` topic exchange with ``<name>.#`` for itself and every service and
endpoint under it, and ``broadcast.#``. A request is translated into the
``EndpointService`` operation statehub's own protocol runs (``get``/``set``/``cmd``), so a
change over the mesh is the same change: same revision, lockout and log event. Logged
values go out as alerts on ``<alert_routing_key>.<endpoint name>``; heartbeats on
``<heartbeat_routing_key>.<service name>``.

The broker may come and go: statehub keeps serving its own clients, retries with
exponential backoff, and declares its exchanges, queues and bindings again on every
connection. A message that cannot be understood is answered with the reference's error
code when it has a ``reply_to``, logged, and never stops the consumer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import random
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from statehub.core.values import JsonValue
from statehub.dripline import wire
from statehub.dripline.chunks import Reassembler, message_ids, split
from statehub.dripline.operations import MeshNode, mesh_nodes, operate, reply_code
from statehub.dripline.settings import MeshSettings
from statehub.endpoints.event_log import LoggedEvent
from statehub.endpoints.nodes import Endpoint
from statehub.endpoints.return_codes import (
    DecodingFailedError,
    EndpointError,
    UnhandledExceptionError,
)
from statehub.endpoints.service import EndpointService
from statehub.errors import StatehubError

logger = logging.getLogger(__name__)

#: Alerts kept while the broker is away, published when it is back (oldest dropped).
MAX_QUEUED_ALERTS = 10_000
#: Requests taken from the broker but not yet answered, per connection.
PREFETCH = 256


@dataclass(frozen=True, slots=True)
class _Request:
    """What is needed to answer a request once its payload is complete."""

    node: MeshNode
    routing_key: str
    headers: wire.RequestHeaders
    content_encoding: str | None
    reply_to: str | None
    correlation_id: str | None


class MeshService:
    """Serves ``service``'s endpoints on the broker of ``settings`` while started."""

    def __init__(
        self,
        service: EndpointService,
        settings: MeshSettings,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.service = service
        self.settings = settings
        self.nodes = mesh_nodes(service)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        #: Identifies this run in heartbeats (``{name, id}``).
        self.instance_id = str(uuid.uuid4())
        self._senders = {node.name: wire.sender_info(node.name) for node in self.nodes}
        self._alerts: collections.deque[tuple[Endpoint, LoggedEvent]] = collections.deque(
            maxlen=MAX_QUEUED_ALERTS
        )
        self._alert_ready: asyncio.Event | None = None
        self._connected: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._reassembler: Reassembler[_Request] = Reassembler(settings.chunk_timeout)
        self._operations: ThreadPoolExecutor | None = None
        self._dropped_alerts = 0
        #: How many times a connection to the broker was made (1 on the first).
        self.connections = 0

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting (in the background: the broker need not be up)."""
        if self._task is not None:
            raise RuntimeError("the dripline mesh service is already started")
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._alert_ready = asyncio.Event()
        self._remove_listener = self.service.on_logged(self._on_logged)
        # One thread runs the endpoint operations (the store may write to disk), in the
        # order requests arrived: a set and the get after it see each other, while
        # decoding and replying to other requests overlap with them on the loop.
        self._operations = ThreadPoolExecutor(1, thread_name_prefix="statehub-dripline")
        self._task = asyncio.create_task(self._run(), name="statehub-dripline-mesh")

    async def stop(self) -> None:
        """Leave the mesh: stop consuming, close the connection, wait for it."""
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        task, self._task = self._task, None
        if task is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        await task
        if self._operations is not None:
            self._operations.shutdown(wait=True)
            self._operations = None

    async def __aenter__(self) -> MeshService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def connected(self) -> bool:
        return self._connected is not None and self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        """Wait until serving on the broker; ``TimeoutError`` after ``timeout`` seconds."""
        if self._connected is None:
            raise RuntimeError("the dripline mesh service is not started")
        await asyncio.wait_for(self._connected.wait(), timeout)

    # -- connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._stopping is not None and self._connected is not None
        delay = self.backoff_initial
        while not self._stopping.is_set():
            try:
                connection = await aio_pika.connect(
                    self.settings.url,
                    timeout=self.connect_timeout,
                    client_properties={"connection_name": f"statehub {self.instance_id}"},
                )
            except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as error:
                logger.warning(
                    "dripline mesh: cannot reach the broker at %s (%s); retrying in %.1f s",
                    self.settings.where,
                    _describe(error),
                    delay,
                )
                await self._pause(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            try:
                served = await self._serve_connection(connection)
            except Exception:
                # Whatever went wrong, the mesh must not die: log it and start over.
                logger.exception("dripline mesh: unexpected failure; reconnecting")
                served = False
            finally:
                self._connected.clear()
                with contextlib.suppress(Exception):
                    await connection.close()
            if served:
                delay = self.backoff_initial
            elif not self._stopping.is_set():
                await self._pause(delay)
                delay = min(delay * 2, self.backoff_max)

    async def _pause(self, delay: float) -> None:
        assert self._stopping is not None
        jittered = delay * random.uniform(0.8, 1.2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), jittered)

    async def _serve_connection(self, connection: aio_pika.abc.AbstractConnection) -> bool:
        """Declare everything and serve until the connection or channel ends, or stop.
        True if it got as far as serving (the next retry starts from a short delay)."""
        assert self._stopping is not None and self._connected is not None
        try:
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=PREFETCH)
            requests = await channel.declare_exchange(
                self.settings.requests_exchange, aio_pika.ExchangeType.TOPIC
            )
            alerts = await channel.declare_exchange(
                self.settings.alerts_exchange, aio_pika.ExchangeType.TOPIC
            )
            for node in self.nodes:
                await self._declare_queue(channel, requests, node)
        except (aio_pika.exceptions.AMQPError, OSError) as error:
            logger.error(
                "dripline mesh: the broker at %s refused the set-up (%s); retrying",
                self.settings.where,
                _describe(error),
            )
            return False
        self.connections += 1
        names = ", ".join(node.name for node in self.nodes)
        logger.info(
            "dripline mesh: serving %s on %s (exchanges %r and %r)",
            names,
            self.settings.where,
            self.settings.requests_exchange,
            self.settings.alerts_exchange,
        )
        self._connected.set()
        workers = [
            asyncio.create_task(self._publish_alerts(alerts)),
            asyncio.create_task(self._send_heartbeats(alerts)),
        ]
        causes: list[BaseException] = []

        def closed(_: object, cause: BaseException | None = None) -> None:
            if cause is not None:
                causes.append(cause)

        connection.close_callbacks.add(closed)
        channel.close_callbacks.add(closed)
        ended = [
            asyncio.ensure_future(connection.closed()),
            asyncio.ensure_future(channel.closed()),
            asyncio.ensure_future(self._stopping.wait()),
            *workers,
        ]
        try:
            done, _ = await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in ended:
                future.cancel()
            await asyncio.gather(*ended, return_exceptions=True)
        if not self._stopping.is_set():
            failed = [task for task in workers if task in done and not task.cancelled()]
            causes += [cause for task in failed if (cause := task.exception()) is not None]
            reason = _describe(causes[0]) if causes else "the connection closed"
            logger.warning(
                "dripline mesh: lost the broker at %s (%s); statehub keeps serving its own "
                "clients and reconnects",
                self.settings.where,
                reason,
            )
        return True

    async def _declare_queue(
        self,
        channel: AbstractChannel,
        requests: AbstractExchange,
        node: MeshNode,
    ) -> AbstractQueue:
        queue = await channel.declare_queue(node.name, exclusive=True, auto_delete=True)
        for key in node.binding_keys:
            await queue.bind(requests, routing_key=key)

        async def deliver(message: AbstractIncomingMessage) -> None:
            try:
                await self._handle(node, message, requests)
            except Exception:
                logger.exception("dripline mesh: failed to answer a request to %s", node.name)
            finally:
                # After the broker went away the ack cannot go, and need not: the
                # unacknowledged message went with the exclusive queue.
                with contextlib.suppress(Exception):
                    await message.ack()

        await queue.consume(deliver)
        return queue

    # -- requests ------------------------------------------------------------------------

    async def _handle(
        self, node: MeshNode, message: AbstractIncomingMessage, requests: AbstractExchange
    ) -> None:
        """Answer one message. Nothing is awaited before its operation is queued, so
        operations run in the order the broker delivered the requests."""
        routing_key = message.routing_key or ""
        reply = _Replier(self, requests, node.name, message.reply_to, message.correlation_id)
        try:
            headers = wire.parse_request_headers(dict(message.headers or {}))
        except EndpointError as error:
            logger.warning("dripline mesh: bad request headers on %r: %s", routing_key, error)
            await reply.error(error, None)
            return
        if headers.message_type != wire.REQUEST:
            logger.debug("dripline mesh: ignored a message of type %d", headers.message_type)
            return
        request = _Request(
            node,
            routing_key,
            headers,
            message.content_encoding,
            message.reply_to,
            message.correlation_id,
        )
        assert self._loop is not None
        try:
            whole = self._reassembler.add(
                message.message_id, message.body, request, self._loop.time()
            )
        except DecodingFailedError as error:
            await reply.error(error, headers.specifier)
            return
        if whole is None:
            self._loop.call_later(self.settings.chunk_timeout, self._expire_chunks, requests)
            return
        body, request = whole
        await self._answer(request, body, reply)

    async def _answer(self, request: _Request, body: bytes, reply: _Replier) -> None:
        specifier = request.headers.specifier
        try:
            payload = wire.decode_payload(body, request.content_encoding)
            assert self._loop is not None and self._operations is not None
            result = await self._loop.run_in_executor(
                self._operations,
                operate,
                self.service,
                request.node,
                request.routing_key,
                request.headers,
                payload,
            )
        except EndpointError as error:
            if isinstance(error, UnhandledExceptionError):
                logger.error("dripline mesh: %s failed: %s", request.routing_key, error)
            await reply.error(error, specifier)
            return
        except StatehubError as error:
            await reply.error(
                UnhandledExceptionError(f"{type(error).__name__}: {error}"), specifier
            )
            return
        except Exception as error:
            logger.exception("dripline mesh: %s failed", request.routing_key)
            await reply.error(
                UnhandledExceptionError(f"{type(error).__name__}: {error}"), specifier
            )
            return
        code, message = reply_code(result)
        await reply.send(result, code, message, specifier)

    def _expire_chunks(self, requests: AbstractExchange) -> None:
        assert self._loop is not None
        for incomplete in self._reassembler.expire(self._loop.time()):
            request = incomplete.context
            logger.warning("dripline mesh: %s", incomplete.describe())
            replier = _Replier(
                self, requests, request.node.name, request.reply_to, request.correlation_id
            )
            self._loop.create_task(
                replier.error(DecodingFailedError(incomplete.describe()), request.headers.specifier)
            )

    async def publish(
        self,
        exchange: AbstractExchange,
        routing_key: str,
        payload: JsonValue,
        headers: dict[str, Any],
        *,
        correlation_id: str | None = None,
    ) -> None:
        """Publish one dripline message, in chunks if its payload is over the maximum."""
        pieces = split(wire.encode_payload(payload), self.settings.max_payload_size)
        ids = message_ids(len(pieces))
        for piece, message_id in zip(pieces, ids, strict=True):
            await exchange.publish(
                aio_pika.Message(
                    piece,
                    headers=headers,
                    content_encoding=wire.ENCODING,
                    correlation_id=correlation_id,
                    message_id=message_id if len(pieces) > 1 else message_id.split("/")[0],
                ),
                routing_key=routing_key,
                mandatory=False,
            )

    # -- alerts and heartbeats -----------------------------------------------------------

    def _on_logged(self, endpoint: Endpoint, event: LoggedEvent) -> None:
        """Called by the endpoint service (any thread) for each logged value."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._queue_alert, endpoint, event)

    def _queue_alert(self, endpoint: Endpoint, event: LoggedEvent) -> None:
        if len(self._alerts) == self._alerts.maxlen:
            self._dropped_alerts += 1
            if self._dropped_alerts == 1 or self._dropped_alerts % 1000 == 0:
                logger.warning(
                    "dripline mesh: %d logged values not published (the broker is away and "
                    "%d are queued)",
                    self._dropped_alerts,
                    MAX_QUEUED_ALERTS,
                )
        self._alerts.append((endpoint, event))
        if self._alert_ready is not None:
            self._alert_ready.set()

    async def _publish_alerts(self, alerts: AbstractExchange) -> None:
        assert self._alert_ready is not None
        while True:
            while self._alerts:
                endpoint, event = self._alerts[0]
                routing_key = f"{endpoint.config.alert_routing_key}.{endpoint.name}"
                sender = self._senders[self._owner(endpoint)]
                await self.publish(
                    alerts,
                    routing_key,
                    {"value_raw": event.value_raw, "value_cal": event.value_cal},
                    {**wire.alert_headers(None, sender), "timestamp": _event_time(event)},
                )
                self._alerts.popleft()  # only once sent: a lost broker keeps it for later
            self._alert_ready.clear()
            await self._alert_ready.wait()

    def _owner(self, endpoint: Endpoint) -> str:
        for node in self.nodes:
            if endpoint.address == node.node.address or endpoint.address.startswith(
                node.node.address + "."
            ):
                return node.name
        return self.nodes[0].name

    async def _send_heartbeats(self, alerts: AbstractExchange) -> None:
        while True:
            for node in self.nodes:
                await self.publish(
                    alerts,
                    f"{self.settings.heartbeat_routing_key}.{node.name}",
                    {"name": node.name, "id": self.instance_id},
                    wire.alert_headers(None, self._senders[node.name]),
                )
            await asyncio.sleep(self.settings.heartbeat_interval)


class _Replier:
    """Answers one request, if it asked for an answer (has a ``reply_to``)."""

    def __init__(
        self,
        mesh: MeshService,
        exchange: AbstractExchange,
        service_name: str,
        reply_to: str | None,
        correlation_id: str | None,
    ) -> None:
        self._mesh = mesh
        self._exchange = exchange
        self._sender = mesh._senders[service_name]
        self._reply_to = reply_to
        self._correlation_id = correlation_id

    async def send(
        self, payload: JsonValue, code: int, message: str, specifier: str | None
    ) -> None:
        if not self._reply_to:
            return
        await self._mesh.publish(
            self._exchange,
            self._reply_to,
            payload,
            wire.reply_headers(code, message, specifier, self._sender),
            correlation_id=self._correlation_id,
        )

    async def error(self, error: EndpointError, specifier: str | None) -> None:
        await self.send(None, error.code, error.reason, specifier)


def _event_time(event: LoggedEvent) -> str:
    return wire.timestamp(dt.datetime.fromtimestamp(event.time, dt.UTC))


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if text != type(error).__name__ else text
