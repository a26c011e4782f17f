"""A client for any dripline service on a broker: ``AsyncDriplineClient``, and
``DriplineClient`` (the same calls, blocking, over an event loop in a background thread).

Every call returns a ``Reply`` with the payload *and* the return code (a warning, 1-99,
is no failure and must not be lost); a code >= 100 raises the typed ``EndpointError``
registered for it (``AccessDeniedError`` for 307...), the same types statehub's own
protocol raises. The client's own failures use the client codes: 101 no broker, 102
nobody bound to the routing key, 402 an unreadable reply, 404 no reply in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

from statehub.core.values import JsonValue
from statehub.dripline import wire
from statehub.dripline.chunks import Reassembler, message_ids, split
from statehub.dripline.settings import MeshSettings, mesh_settings
from statehub.endpoints.return_codes import (
    AmqpError,
    BrokerConnectionError,
    ClientTimeoutError,
    EndpointError,
    HandlingReplyError,
    InvalidRoutingKeyError,
)

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
#: The lowest return code that is an error (below it: success and warnings).
FIRST_ERROR_CODE = 100


class AsyncDriplineClient:
    """Sends dripline requests and waits for their replies.

    ``async with AsyncDriplineClient("amqp://guest:guest@localhost/") as client:
    reply = await client.get("peaches")``. Connects on first use (or ``connect()``), and
    again after the broker went away.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: MeshSettings | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        name: str = "statehub-dripline-client",
    ) -> None:
        self.settings = settings if settings is not None else mesh_settings(url)
        self.timeout = timeout
        self.name = name
        self._sender = wire.sender_info(name)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._requests: AbstractExchange | None = None
        self._reply_to = ""
        self._pending: dict[str, asyncio.Future[wire.Reply]] = {}
        self._reassembler: Reassembler[str] = Reassembler(self.settings.chunk_timeout)
        self._connecting = asyncio.Lock()

    async def connect(self) -> None:
        """Connect and declare the reply queue; ``BrokerConnectionError`` (101) if the
        broker cannot be reached."""
        async with self._connecting:
            if self._usable():
                return
            if self._connection is not None:  # half gone (its channel closed): start over
                with contextlib.suppress(Exception):
                    await self._connection.close()
            try:
                connection = await aio_pika.connect(
                    self.settings.url,
                    timeout=self.timeout,
                    client_properties={"connection_name": self.name},
                )
            except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as error:
                raise BrokerConnectionError(
                    f"cannot reach the broker at {self.settings.where}: "
                    f"{error or type(error).__name__}"
                ) from None
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                requests = await channel.declare_exchange(
                    self.settings.requests_exchange, aio_pika.ExchangeType.TOPIC
                )
                replies = await channel.declare_queue(exclusive=True, auto_delete=True)
                await replies.bind(requests, routing_key=replies.name)
                await replies.consume(self._on_reply, no_ack=True)
            except BaseException as error:
                await connection.close()
                if isinstance(error, aio_pika.exceptions.AMQPError):
                    raise AmqpError(
                        f"the broker at {self.settings.where} refused the client's exchange or "
                        f"reply queue: {error}"
                    ) from None
                raise
            connection.close_callbacks.add(self._on_close)
            channel.close_callbacks.add(self._on_close)
            self._connection, self._channel, self._requests = connection, channel, requests
            self._reply_to = replies.name

    def _usable(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    def _on_close(self, *_: object) -> None:
        lost = BrokerConnectionError(f"lost the broker at {self.settings.where}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(lost)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def __aenter__(self) -> AsyncDriplineClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- requests ------------------------------------------------------------------------

    async def request(
        self,
        target: str,
        operation: int,
        payload: JsonValue = None,
        *,
        specifier: str | None = None,
        lockout_key: str | None = None,
        timeout: float | None = None,
    ) -> wire.Reply:
        """Send one request to the routing key ``target`` and return its reply (raising
        the reply's typed error if its code is >= 100)."""
        await self.connect()
        assert self._requests is not None
        correlation_id = wire.new_id()
        future: asyncio.Future[wire.Reply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        headers = wire.request_headers(operation, specifier, lockout_key, self._sender)
        pieces = split(wire.encode_payload(payload), self.settings.max_payload_size)
        ids = message_ids(len(pieces))
        wait = self.timeout if timeout is None else timeout
        try:
            for piece, message_id in zip(pieces, ids, strict=True):
                try:
                    await self._requests.publish(
                        aio_pika.Message(
                            piece,
                            headers=headers,
                            content_encoding=wire.ENCODING,
                            correlation_id=correlation_id,
                            reply_to=self._reply_to,
                            message_id=message_id if len(pieces) > 1 else message_id.split("/")[0],
                        ),
                        routing_key=target,
                        mandatory=True,
                    )
                except aio_pika.exceptions.DeliveryError:
                    raise InvalidRoutingKeyError(
                        f"no dripline service is bound to {target!r} on exchange "
                        f"{self.settings.requests_exchange!r}"
                    ) from None
                except (
                    aio_pika.exceptions.AMQPError,
                    aio_pika.exceptions.ChannelInvalidStateError,
                    OSError,
                ) as error:
                    raise BrokerConnectionError(
                        f"could not send to {target!r} on {self.settings.where}: {error}"
                    ) from None
            try:
                reply = await asyncio.wait_for(future, wait)
            except TimeoutError:
                raise ClientTimeoutError(f"no reply from {target!r} within {wait:g} s") from None
        finally:
            self._pending.pop(correlation_id, None)
            # drop what is left of replies whose chunks stopped coming
            self._reassembler.expire(asyncio.get_running_loop().time())
        if reply.return_code >= FIRST_ERROR_CODE:
            raise reply.error()
        return reply

    async def get(
        self, target: str, specifier: str | None = None, *, timeout: float | None = None
    ) -> wire.Reply:
        """OP_GET: ``{value_raw, value_cal}`` of an endpoint (or what ``specifier`` names)."""
        return await self.request(target, wire.OP_GET, None, specifier=specifier, timeout=timeout)

    async def set(
        self,
        target: str,
        value: JsonValue,
        *,
        specifier: str | None = None,
        lockout_key: str | None = None,
        timeout: float | None = None,
    ) -> wire.Reply:
        """OP_SET with ``{"values": [value]}``."""
        return await self.request(
            target,
            wire.OP_SET,
            {"values": [value]},
            specifier=specifier,
            lockout_key=lockout_key,
            timeout=timeout,
        )

    async def cmd(
        self,
        target: str,
        specifier: str | None = None,
        *args: JsonValue,
        lockout_key: str | None = None,
        timeout: float | None = None,
        **kwargs: JsonValue,
    ) -> wire.Reply:
        """OP_CMD: run the method ``specifier`` (``lock``, ``ping``...) with ``{"values":
        [args...], **kwargs}``."""
        return await self.request(
            target,
            wire.OP_CMD,
            {"values": list(args), **kwargs},
            specifier=specifier,
            lockout_key=lockout_key,
            timeout=timeout,
        )

    # -- replies -------------------------------------------------------------------------

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        correlation_id = message.correlation_id
        future = self._pending.get(correlation_id or "")
        if future is None or future.done():
            return  # late, duplicate (a broadcast answered by several services), or not ours
        try:
            whole = self._reassembler.add(
                message.message_id,
                message.body,
                correlation_id or "",
                asyncio.get_running_loop().time(),
            )
            if whole is None:
                return
            headers = dict(message.headers or {})
            code = wire.header_int(headers, "return_code")
            if code is None:
                raise HandlingReplyError("the reply has no return_code header")
            payload = wire.decode_payload(whole[0], message.content_encoding)
            reply = wire.Reply(
                payload, code, wire.header_str(headers, "return_message") or "", headers
            )
        except EndpointError as error:
            future.set_exception(HandlingReplyError(f"unreadable reply: {error}"))
            return
        future.set_result(reply)


class DriplineClient:
    """``AsyncDriplineClient``'s calls, blocking. ``with DriplineClient(url) as client:
    client.set("peaches", 0.5)``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: MeshSettings | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        name: str = "statehub-dripline-client",
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="statehub-dripline-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self.aio = self._run(self._create(url, settings, timeout, name))
            self._run(self.aio.connect())
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _create(
        url: str | None, settings: MeshSettings | None, timeout: float, name: str
    ) -> AsyncDriplineClient:
        return AsyncDriplineClient(url, settings=settings, timeout=timeout, name=name)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def request(
        self,
        target: str,
        operation: int,
        payload: JsonValue = None,
        *,
        specifier: str | None = None,
        lockout_key: str | None = None,
        timeout: float | None = None,
    ) -> wire.Reply:
        """See ``AsyncDriplineClient.request``."""
        return self._run(
            self.aio.request(
                target,
                operation,
                payload,
                specifier=specifier,
                lockout_key=lockout_key,
                timeout=timeout,
            )
        )

    def get(
        self, target: str, specifier: str | None = None, *, timeout: float | None = None
    ) -> wire.Reply:
        """See ``AsyncDriplineClient.get``."""
        return self._run(self.aio.get(target, specifier, timeout=timeout))

    def set(
        self,
        target: str,
        value: JsonValue,
        *,
        specifier: str | None = None,
        lockout_key: str | None = None,
        timeout: float | None = None,
    ) -> wire.Reply:
        """See ``AsyncDriplineClient.set``."""
        return self._run(
            self.aio.set(
                target, value, specifier=specifier, lockout_key=lockout_key, timeout=timeout
            )
        )

    def cmd(
        self,
        target: str,
        specifier: str | None = None,
        *args: JsonValue,
        lockout_key: str | None = None,
        timeout: float | None = None,
        **kwargs: JsonValue,
    ) -> wire.Reply:
        """See ``AsyncDriplineClient.cmd``."""
        return self._run(
            self.aio.cmd(
                target, specifier, *args, lockout_key=lockout_key, timeout=timeout, **kwargs
            )
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self.aio.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        with contextlib.suppress(RuntimeError):
            self._loop.close()

    def __enter__(self) -> DriplineClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
