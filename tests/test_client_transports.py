"""Clients over each transport besides the default plain TCP (WebSocket, gRPC), next to
the default's.

(The reconnect case with lost leases and locks, on TCP and gRPC, is in test_client_async.py.)
"""

from __future__ import annotations

import asyncio

import pytest

from statehub import AsyncClient, DictionaryChange
from statehub.client.hello import hello_message
from statehub.client.transports import open_frame_stream
from statehub.protocol import decode_batch, encode_batch
from support.polling import eventually
from support.raw_session import running_server
from support.transports import GRPC, TCP, WEBSOCKET, Transport

#: The transports besides the default (whose tests run on it and gRPC: ``transport``).
OTHER_TRANSPORTS = pytest.mark.parametrize(
    "transport", [WEBSOCKET, GRPC], ids=lambda transport: transport.name
)


@OTHER_TRANSPORTS
async def test_a_client_reconnects_and_resumes_after_the_server_restarts(
    transport: Transport,
) -> None:
    first = transport.server(0)
    await first.start()
    port = getattr(first, transport.attribute)
    client = AsyncClient(transport.url(first), backoff_initial=0.02, backoff_max=0.2)
    lost: list[str] = []
    client.connection_lost.add_callback(lambda reason: lost.append(reason))
    try:
        await client.set("a", 1)
        changes = client.subscribe()
        assert (await anext(changes)).updates == {"a": 1}
        await first.stop()
        await eventually(lambda: not client.connected)
        assert lost
        second = transport.server(port)
        second.state.update_state(None, DictionaryChange({"fresh": True}))
        await second.start()
        try:
            await client.wait_connected(timeout=10)
            change = await anext(changes)
            assert change.snapshot and change.updates == {"fresh": True}
            await client.set("b", 2)
            assert (await anext(changes)).updates == {"b": 2}
        finally:
            await changes.aclose()
            await second.stop()
    finally:
        await client.close()


@OTHER_TRANSPORTS
async def test_clients_over_it_and_over_tcp_see_each_others_writes_with_the_same_revisions(
    transport: Transport,
) -> None:
    async with running_server(http_port=0) as server:
        over_it = AsyncClient(transport.url(server))
        over_tcp = AsyncClient("127.0.0.1", server.port)
        try:
            seen_by_it: list[tuple[int, dict[str, object]]] = []
            seen_by_tcp: list[tuple[int, dict[str, object]]] = []
            async with (
                over_it.subscribe(prefix="") as its_stream,
                over_tcp.subscribe(prefix="") as tcp_stream,
            ):
                first = await over_it.set("from-it", 1)
                second = await over_tcp.set("from-tcp", 2)
                assert second == first + 1
                for stream, seen in ((its_stream, seen_by_it), (tcp_stream, seen_by_tcp)):
                    async for change in stream:
                        seen.append((change.revision, dict(change.updates)))
                        if change.revision >= second:
                            break
            merged_it = {k: v for _, updates in seen_by_it for k, v in updates.items()}
            merged_tcp = {k: v for _, updates in seen_by_tcp for k, v in updates.items()}
            assert merged_it == merged_tcp == {"from-it": 1, "from-tcp": 2}
            assert seen_by_it[-1][0] == seen_by_tcp[-1][0] == second
            assert await over_it.get("from-tcp") == 2
            assert await over_tcp.get("from-it") == 1
            peers = {session.peer.transport: session.peer for session in server.hub.sessions}
            assert set(peers) == {transport.name, "tcp"}
            assert peers["tcp"].address.startswith("tcp:127.0.0.1:")
        finally:
            await over_it.close()
            await over_tcp.close()


@pytest.mark.parametrize("transport", [TCP, WEBSOCKET, GRPC], ids=lambda transport: transport.name)
async def test_overlapping_writes_on_a_frame_stream_all_arrive(transport: Transport) -> None:
    """A gRPC call takes one write at a time: a second one in flight ended the call
    INTERNAL on the client's side, so the server's last message and status went unread."""
    async with running_server(http_port=0) as server:
        if transport is GRPC:
            stream = await open_frame_stream("127.0.0.1", server.grpc_port)
        else:
            stream = await open_frame_stream(transport.url(server), 0)
        try:
            await stream.write(encode_batch([hello_message(1, None, "overlapping", None)]))
            await stream.read()  # the welcome
            # many: a second gRPC write collides only while the first's completion waits
            # for grpc's poller thread (a few in a hundred)
            pings = range(2, 502)
            await asyncio.gather(
                *(stream.write(encode_batch([{"id": n, "op": "ping"}])) for n in pings)
            )
            answered: set[int] = set()
            while len(answered) < len(pings):
                frame = await stream.read()
                assert frame is not None
                answered.update(message["id"] for message in decode_batch(frame))
            assert answered == set(pings)
        finally:
            await stream.close()
