"""Moves frames between a gRPC bidirectional stream and a ``Session``; nothing else.

The stream carries raw bytes (no protobuf): each gRPC message is one frame of the
session protocol. Reading and writing run concurrently, so a client that pipelines
requests is read while replies are written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc import aio

from statehub.protocol import SERVICE_NAME, SESSION_METHOD
from statehub.protocol.errors import ProtocolError, status_of
from statehub.server.session import Hub, Session


def session_handler(hub: Hub) -> grpc.GenericRpcHandler:
    """The generic handler serving ``/statehub.v1.Hub/Session`` for ``hub``'s sessions."""

    async def handle(
        request_iterator: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> None:
        session = Session(hub, peer=context.peer())
        reader = asyncio.ensure_future(_read(request_iterator, session))
        try:
            while (frame := await session.next_frame()) is not None:
                await context.write(frame)
            if reader.done() and not reader.cancelled():
                error = reader.exception()
                if isinstance(error, ProtocolError):
                    await context.abort(grpc.StatusCode[status_of(error)], str(error))
                elif error is not None:
                    raise error
        finally:
            reader.cancel()
            await asyncio.wait([reader])
            await session.close()

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME, {SESSION_METHOD: grpc.stream_stream_rpc_method_handler(handle)}
    )


async def _read(request_iterator: AsyncIterator[bytes], session: Session) -> None:
    """Feed every frame to the session; end it when the client stops sending."""
    try:
        async for frame in request_iterator:
            await session.receive(frame)
    finally:
        session.end()
