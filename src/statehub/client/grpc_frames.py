"""The session's frames as the messages of one gRPC bidirectional stream (``statehub://``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import grpc.aio

from statehub.client.frame_stream import CLOSE_GRACE, StreamBroken
from statehub.client.tls import ClientTls
from statehub.errors import MessageTooLargeError, ProtocolError, StatehubError
from statehub.protocol import SESSION_PATH

#: The statuses a session stream ends with when the server says why, and the error each
#: stands for: the server aborts a malformed stream with ``ProtocolError``'s status
#: (``server/grpc_transport.py``), and gRPC refuses a message over the server's limit.
_SERVER_ERRORS: dict[grpc.StatusCode, type[StatehubError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ProtocolError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: MessageTooLargeError,
}

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.enable_retries", 0),
    # One TCP connection per client (several clients in a process must not share one).
    ("grpc.use_local_subchannel_pool", 1),
]


class GrpcFrames:
    """Frames as the messages of one ``/statehub.v1.Hub/Session`` bidirectional stream."""

    def __init__(self, channel: grpc.aio.Channel, call: Any) -> None:
        self._channel = channel
        self._call = call
        # One write in flight at a time: grpc-core refuses a second one on the call
        # (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS) until the first's completion is taken,
        # and grpc.aio then ends the call INTERNAL on this side, so the server's last
        # message and status are never read.
        self._writing = asyncio.Lock()

    @classmethod
    async def open(cls, target: str, tls: ClientTls | None) -> GrpcFrames:
        if tls is None:
            channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.secure_channel(
                target, tls.channel_credentials(), options=_CHANNEL_OPTIONS + tls.channel_options()
            )
        try:
            await _wait_ready(channel)
            return cls(channel, channel.stream_stream(SESSION_PATH)())
        except BaseException:
            await channel.close()
            raise

    async def write(self, frame: bytes) -> None:
        try:
            async with self._writing:
                await self._call.write(frame)
        except grpc.aio.AioRpcError as error:
            raise _broken(error) from None

    async def read(self) -> bytes | None:
        try:
            frame = await self._call.read()
        except grpc.aio.AioRpcError as error:
            raise _broken(error) from None
        return None if frame is grpc.aio.EOF else frame

    def abort(self) -> None:
        self._call.cancel()
        closing = asyncio.ensure_future(self._channel.close())
        closing.add_done_callback(lambda _: None)

    async def close(self) -> None:
        self._call.cancel()
        # Let grpc record the call's final status, or its status task can be left
        # pending and asyncio reports "Task was destroyed but it is pending" at loop
        # shutdown (grpc/grpc#41875; grpc's own fix waits on call.code() the same way).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._call.code(), CLOSE_GRACE)
        await self._channel.close()


async def _wait_ready(channel: grpc.aio.Channel) -> None:
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state in (
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        ):
            raise StreamBroken("connection refused or host unreachable")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def _broken(error: grpc.aio.AioRpcError) -> StreamBroken:
    details = error.details() or ""
    description = f"{error.code().name}{': ' + details if details else ''}"
    server_error = _SERVER_ERRORS.get(error.code())
    return StreamBroken(description, server_error(details or description) if server_error else None)
