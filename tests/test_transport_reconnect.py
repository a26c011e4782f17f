"""A client over each alternative transport reconnects and resumes after a server restart.

(gRPC's own case, with lost leases and locks, is in test_client_async.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from statehub import AsyncClient, DictionaryChange, StateServer
from test_server_support import eventually

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
