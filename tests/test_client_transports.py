"""Clients over each alternative transport (WebSocket, plain TCP), next to gRPC's.

(gRPC's own reconnect case, with lost leases and locks, is in test_client_async.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from statehub import AsyncClient, DictionaryChange, StateServer
from test_server_support import eventually, running_server

#: Transport name (as a session's Peer reports it) -> the server's port option, client URL.
TRANSPORTS = {
    "websocket": ("http_port", "ws://127.0.0.1:{port}"),
    "tcp": ("tcp_port", "statehub+tcp://127.0.0.1:{port}"),
}


def _server(option: str, port: int) -> StateServer:
    options: dict[str, Any] = {option: port}
    return StateServer(address="127.0.0.1", port=0, **options)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_a_client_reconnects_and_resumes_after_the_server_restarts(transport: str) -> None:
    option, url = TRANSPORTS[transport]
    first = _server(option, 0)
    await first.start()
    port = getattr(first, option)
    client = AsyncClient(url.format(port=port), backoff_initial=0.02, backoff_max=0.2)
    lost: list[str] = []
    client.connection_lost.add_callback(lambda reason: lost.append(reason))
    try:
        await client.set("a", 1)
        changes = client.subscribe()
        assert (await anext(changes)).updates == {"a": 1}
        await first.stop()
        await eventually(lambda: not client.connected)
        assert lost
        second = _server(option, port)
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


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_clients_over_it_and_over_grpc_see_each_others_writes_with_the_same_revisions(
    transport: str,
) -> None:
    option, url = TRANSPORTS[transport]
    async with running_server(http_port=0, tcp_port=0) as server:
        over_it = AsyncClient(url.format(port=getattr(server, option)))
        over_grpc = AsyncClient("127.0.0.1", server.port)
        try:
            seen_by_it: list[tuple[int, dict[str, object]]] = []
            seen_by_grpc: list[tuple[int, dict[str, object]]] = []
            async with (
                over_it.subscribe(prefix="") as its_stream,
                over_grpc.subscribe(prefix="") as grpc_stream,
            ):
                first = await over_it.set("from-it", 1)
                second = await over_grpc.set("from-grpc", 2)
                assert second == first + 1
                for stream, seen in ((its_stream, seen_by_it), (grpc_stream, seen_by_grpc)):
                    async for change in stream:
                        seen.append((change.revision, dict(change.updates)))
                        if change.revision >= second:
                            break
            merged_it = {k: v for _, updates in seen_by_it for k, v in updates.items()}
            merged_grpc = {k: v for _, updates in seen_by_grpc for k, v in updates.items()}
            assert merged_it == merged_grpc == {"from-it": 1, "from-grpc": 2}
            assert seen_by_it[-1][0] == seen_by_grpc[-1][0] == second
            assert await over_it.get("from-grpc") == 2
            assert await over_grpc.get("from-it") == 1
            peers = {session.peer.transport: session.peer for session in server.hub.sessions}
            assert set(peers) == {transport, "grpc"}
            if transport == "tcp":
                assert peers["tcp"].address.startswith("tcp:127.0.0.1:")
        finally:
            await over_it.close()
            await over_grpc.close()
