"""Bytes values (issue 20 point 5): NanoVer's msgpack ``bin`` through every edge that has
bytes, kept exactly; a stand-in where a format has none (JSON output)."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from statehub import AsyncClient, Client
from statehub.cli import main
from statehub.serving.state_server import StateServer
from support.client_servers import threaded_server
from support.polling import DEADLINE, eventually
from test_web_nanover import nanover_peer, web_server

PACKED = bytes(range(256))


async def test_bytes_travel_the_session_protocol_to_readers_and_subscribers(
    server: StateServer, client: AsyncClient
) -> None:
    async with AsyncClient("127.0.0.1", server.port) as reader:
        changes = reader.subscribe(prefix="packed")
        snapshot = await asyncio.wait_for(changes.__anext__(), DEADLINE)
        assert snapshot.updates == {}
        await client.update({"packed.colours": PACKED, "packed.nested": {"a": [PACKED]}})
        assert await reader.get("packed.colours") == PACKED
        assert await reader.get("packed.nested") == {"a": [PACKED]}
        delta = await asyncio.wait_for(changes.__anext__(), DEADLINE)
        assert delta.updates == {"packed.colours": PACKED, "packed.nested": {"a": [PACKED]}}
        await changes.aclose()


async def test_bytes_go_from_one_nanover_client_to_another_as_bin() -> None:
    async with web_server() as server, nanover_peer(server) as a, nanover_peer(server) as b:
        await a.write({"selection.packed": PACKED})
        await eventually(lambda: b.state.get("selection.packed") == PACKED)
        assert type(b.state["selection.packed"]) is bytes  # msgpack bin, not str
        assert server.copy_state() == {"selection.packed": PACKED}


def test_the_cli_prints_bytes_as_base64_in_json() -> None:
    running = threaded_server()
    try:
        with Client("127.0.0.1", running.port) as client:
            client.update({"packed": b"\x00\xff"})
        result = CliRunner().invoke(
            main, ["get", "packed", "-o", "json", "-h", "127.0.0.1", "-p", str(running.port)]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"$bytes": "AP8="}
    finally:
        running.close()
