"""Moves frames between a gRPC bidirectional stream and a session; nothing else.

The stream carries raw bytes (no protobuf): each gRPC message is one frame of the
session protocol. ``serve_session`` owns the session's whole life; a session that fails
has written its error as its last frame, and the call then ends with that error's status
(for gRPC clients that read only the status).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from grpc import aio

from statehub.protocol import SERVICE_NAME, SESSION_METHOD
from statehub.protocol.errors import status_of
from statehub.server.grpc_credentials import bearer_token, certificate_identities
from statehub.server.peer import Peer
from statehub.server.session import Hub
from statehub.server.transport import serve_session


class _GrpcFrames:
    """A gRPC stream as a ``FrameStream``.

    It reads with ``context.read()``, not through the request iterator: the iterator is an
    async generator around the same call, and each idle session waits in a read, so the
    generator's frames would be held by every idle subscriber (about 1 KiB each).
    """

    __slots__ = ("_context",)

    def __init__(self, context: aio.ServicerContext[bytes, bytes]) -> None:
        self._context = context

    async def read(self) -> bytes | None:
        frame: object = await self._context.read()
        if frame is aio.EOF:
            return None
        assert isinstance(frame, bytes), "the Session method has no deserializer"
        return frame

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
        failure = await serve_session(hub, _GrpcFrames(context), peer)
        if failure is not None:  # written as the last frame; the call's status says it too
            await context.abort(grpc.StatusCode[status_of(failure)], str(failure))

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME, {SESSION_METHOD: grpc.stream_stream_rpc_method_handler(handle)}
    )
