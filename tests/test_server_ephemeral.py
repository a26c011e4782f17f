"""Keys bound to a session over real servers, under every way a session ends: a clean
close, a dropped connection (the client process killed), a keepalive timeout (the client
process stopped), and the server stopping (with --data: gone at the next start)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from statehub import AsyncClient, DictionaryChange
from statehub.bench.fleet import start_serve, stop
from support.polling import eventually
from support.raw_session import running_server
from support.transports import GRPC, TCP, Transport

#: A client in a process of its own: binds "here.<name>" to its session, says "ready",
#: then waits until killed or stopped.
CLIENT = """
import sys, threading
from statehub import Client

client = Client(sys.argv[1])
client.update({"here." + sys.argv[2]: True, "plain." + sys.argv[2]: 1},
              ephemeral=["here." + sys.argv[2]])
print("ready", flush=True)
threading.Event().wait()
"""


async def _client_process(url: str, name: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, url, name, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.strip() == b"ready"
    return process


async def test_a_clean_close_removes_the_bound_keys_in_one_change() -> None:
    async with running_server() as server:
        async with AsyncClient("127.0.0.1", server.port) as watcher:
            stream = watcher.subscribe()
            changes = aiter(stream)
            await anext(changes)  # the snapshot
            async with AsyncClient("127.0.0.1", server.port) as present:
                await present.update(
                    {"here.a": 1, "here.b": 2, "kept": 3}, ephemeral=["here.a", "here.b"]
                )
                await present.set("here.c", 1, ephemeral=True)
                await present.set("here.c", 2)  # a plain write unbinds it
                await anext(changes)
            gone = await asyncio.wait_for(anext(changes), 10)
            while gone.updates:  # coalescing may hand over the writes first
                gone = await asyncio.wait_for(anext(changes), 10)
            assert gone.removals == {"here.a", "here.b"}
            await stream.aclose()
        assert server.state.copy_content() == {"kept": 3, "here.c": 2}


async def test_another_client_writing_a_bound_key_unbinds_it() -> None:
    async with running_server() as server, AsyncClient("127.0.0.1", server.port) as other:
        async with AsyncClient("127.0.0.1", server.port) as present:
            await present.set("here", 1, ephemeral=True)
            await other.set("here", 2)
        await other.set("marker", 1)
        assert await other.get("here") == 2


async def test_bad_ephemeral_input_over_the_wire() -> None:
    async with running_server() as server, AsyncClient("127.0.0.1", server.port) as client:
        with pytest.raises(ValueError, match="ephemeral key 'z', which the update"):
            await client._request("update", updates={"k": 1}, ephemeral=["z"])
        with pytest.raises(TypeError, match="'ephemeral' must be a list"):
            await client._request("update", updates={"k": 1}, ephemeral="k")
        assert server.state.copy_content() == {}


async def test_a_dropped_connection_removes_the_bound_keys() -> None:
    async with running_server() as server:
        process = await _client_process(TCP.url(server), "dropped")
        try:
            assert server.state.copy_content() == {"here.dropped": True, "plain.dropped": 1}
            process.kill()  # SIGKILL: the socket closes without a goodbye
            await process.wait()
            await eventually(lambda: server.state.copy_content() == {"plain.dropped": 1})
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
# gRPC: HTTP/2 pings; plain TCP: the session's heartbeat (the kernel still answers TCP
# keepalive probes for a stopped process).
@pytest.mark.parametrize("transport", [GRPC, TCP], ids=lambda transport: transport.name)
async def test_a_keepalive_timeout_removes_the_bound_keys(transport: Transport) -> None:
    async with running_server(keepalive_time=1.0, keepalive_timeout=1.0) as server:
        process = await _client_process(transport.url(server), "silent")
        try:
            os.kill(process.pid, signal.SIGSTOP)  # the connection stays open, unanswered
            await eventually(lambda: server.state.copy_content() == {"plain.silent": 1}, timeout=10)
        finally:
            process.kill()
            await process.wait()


async def test_a_server_stop_leaves_none_at_the_next_start(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    serve, port = start_serve("--data", data)
    try:
        async with AsyncClient("127.0.0.1", port) as client:
            await client.update({"here": 1, "kept": 2}, ephemeral=["here"])
            serving = serve  # stopped with the session still open
            stop(serving)
    finally:
        stop(serve)
    serve, port = start_serve("--data", data)
    try:
        async with AsyncClient("127.0.0.1", port) as client:
            await eventually(lambda: _content_is(client, {"kept": 2}))
    finally:
        stop(serve)


async def _content_is(client: AsyncClient, expected: dict[str, object]) -> bool:
    return await client.get_prefix("") == expected


async def test_in_process_the_owner_is_the_access_token() -> None:
    async with running_server() as server:
        state = server.state
        state.update_state("job-7", DictionaryChange({"running.7": True}), ephemeral=["running.7"])
        state.release_owner("job-7")
        assert state.copy_content() == {}
