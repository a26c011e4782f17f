"""StateServer: lifecycle (sync and async), ports, and NanoVer's NanoverServer methods."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from statehub import (
    AsyncClient,
    DictionaryChange,
    ObjectFrozenError,
    ResourceLockedError,
    StateServer,
)
from support.polling import eventually
from support.raw_session import connected, hello_roundtrip, running_server


def test_blocking_context_manager_serves_from_a_background_thread() -> None:
    with StateServer(address="127.0.0.1", port=0) as server:
        assert server.port > 0
        reply = hello_roundtrip(server.port)
        ok = reply["ok"]  # the lease owner is the session, whatever token the client named
        assert ok["token"] == f"{ok['session']}:anyone"  # type: ignore[index]
        assert threading.current_thread() is threading.main_thread()
    with pytest.raises(ObjectFrozenError):
        server.update_state(None, DictionaryChange({"k": 1}))


def test_port_zero_picks_a_free_port_and_port_before_start_is_an_error() -> None:
    server = StateServer(address="127.0.0.1", port=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    server.start_in_thread()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass
    finally:
        server.close()
    server.close()  # closing twice is harmless


def test_a_port_in_use_raises_oserror() -> None:
    with StateServer(address="127.0.0.1", port=0) as first:
        second = StateServer(address="127.0.0.1", port=first.port, grpc_port=0)
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            second.start_in_thread()
        assert hello_roundtrip(first.port)["ok"]


def test_a_port_held_by_another_socket_raises_oserror() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            StateServer(address="127.0.0.1", port=port).start_in_thread()


async def test_a_port_in_use_raises_oserror_in_async_start_too() -> None:
    async with running_server() as first:
        with pytest.raises(OSError):
            await StateServer(address="127.0.0.1", port=first.port).start()


def test_bad_constructor_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="port"):
        StateServer(address="127.0.0.1", port=70000)
    with pytest.raises(ValueError, match="max_message_bytes"):
        StateServer(address="127.0.0.1", port=0, max_message_bytes=10)
    with pytest.raises(ValueError, match="keepalive_time"):
        StateServer(address="127.0.0.1", port=0, keepalive_time=-1)


def test_nanover_server_methods() -> None:
    with StateServer(address="127.0.0.1", port=0) as server:
        server.register_command("echo", lambda text: {"text": text}, {"text": "hi"})
        with pytest.raises(ValueError, match="echo"):
            server.register_command("echo", lambda: None)
        assert set(server.commands) == {"commands/list", "echo"}
        assert server.commands["echo"].default_arguments == {"text": "hi"}
        server.unregister_command("echo")
        with pytest.raises(KeyError):
            server.unregister_command("echo")

        revision = server.update_state(None, DictionaryChange({"a": {"n": [1]}}))
        assert revision == 1
        copy = server.copy_state()
        copy["a"]["n"].append(2)  # type: ignore[index, union-attr]
        assert server.copy_state() == {"a": {"n": [1]}}
        with server.lock_state() as content:
            assert content == {"a": {"n": [1]}}

        server.update_locks("me", acquire={"a": 10.0})
        with pytest.raises(ResourceLockedError):
            server.update_state("you", DictionaryChange({"a": 2}))
        server.update_locks("me", release={"a"})
        server.update_locks("me", acquire={"a": None})
        server.clear_locks()
        server.update_state("you", DictionaryChange({"a": 2}))
        assert server.state.get("a") == 2
        assert server.locks is not None and server.state is server.hub.state


async def test_async_start_and_stop_inside_a_running_loop() -> None:
    server = StateServer(address="127.0.0.1", port=0)
    await server.start()
    try:
        with pytest.raises(RuntimeError, match="await stop"):
            server.close()
        async with connected(server) as session:
            assert await session.request("ping") == {}
    finally:
        await server.stop()
    with pytest.raises(RuntimeError, match="once"):
        await server.start()


async def test_server_side_writes_reach_subscribers_from_another_thread() -> None:
    async with running_server() as server, connected(server) as session:
        sub = await session.subscribe()
        await session.next_batch(sub)
        writer = threading.Thread(
            target=server.update_state, args=(None, DictionaryChange({"from": "thread"}))
        )
        writer.start()
        writer.join()
        assert (await session.next_batch(sub))["updates"] == {"from": "thread"}


async def test_min_interval_raises_a_subscriptions_interval() -> None:
    async with running_server(min_interval=0.2) as server, connected(server) as session:
        sub = await session.subscribe(interval=0)
        await session.next_batch(sub)
        started = asyncio.get_running_loop().time()
        await session.request("update", updates={"k": 1})
        await session.next_batch(sub)
        assert asyncio.get_running_loop().time() - started >= 0.2 * 0.9


async def test_max_workers_bounds_the_threads_running_blocking_commands() -> None:
    started: list[int] = []
    release = threading.Event()

    def slow(n: int) -> dict[str, int]:
        started.append(n)
        release.wait(10)
        return {"n": n}

    with pytest.raises(ValueError, match="max_workers must be an int >= 1, got 0"):
        StateServer(address="127.0.0.1", port=0, max_workers=0)
    async with StateServer(address="127.0.0.1", port=0, max_workers=1) as server:
        server.register_command("slow", slow)
        async with AsyncClient("127.0.0.1", server.port) as client:
            calls = [asyncio.create_task(client.run_command("slow", n=n)) for n in (1, 2)]
            await eventually(lambda: len(started) == 1)
            # The second call has reached the pool and waits there for the one thread.
            pool = server._command_threads  # type: ignore[attr-defined]
            await eventually(lambda: pool._work_queue.qsize() == 1, "the second call queued")
            assert len(started) == 1
            release.set()
            assert sorted(r["n"] for r in await asyncio.gather(*calls)) == [1, 2]
