"""Moves frames between a gRPC bidirectional stream and a session; nothing else.

The stream carries raw bytes (no protobuf): each gRPC message is one frame of the
session protocol. ``serve_session`` owns the session's whole life.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from grpc import aio

from statehub.protocol import SERVICE_NAME, SESSION_METHOD
from statehub.protocol.errors import ProtocolError, status_of
from statehub.server.grpc_credentials import bearer_token, certificate_identities
from statehub.server.peer import Peer
from statehub.server.session import Hub
from statehub.server.transport import serve_session


class _GrpcFrames:
    """A gRPC stream as a ``FrameStream``."""

    def __init__(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> None:
        self._requests = aiter(requests)
        self._context = context

    async def read(self) -> bytes | None:
        try:
            return await anext(self._requests)
        except StopAsyncIteration:
            return None

    async def write(self, frame: bytes) -> None:
        await self._context.write(frame)


def session_handler(hub: Hub) -> grpc.GenericRpcHandler:
    """The generic handler serving ``/statehub.v1.Hub/Session`` for ``hub``'s sessions."""

    async def handle(
        request_iterator: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> None:
        peer = Peer(
            address=context.peer(),
            transport="grpc",
            bearer_token=bearer_token(context),
            certificate_identities=certificate_identities(context),
        )
        try:
            await serve_session(hub, _GrpcFrames(request_iterator, context), peer)
        except ProtocolError as error:
            await context.abort(grpc.StatusCode[status_of(error)], str(error))

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME, {SESSION_METHOD: grpc.stream_stream_rpc_method_handler(handle)}
    )
