"""A statehub server paused past the sweep (SIGSTOP) tells its clients what they lost.

Two ``statehub serve --store redis://`` processes over one redis-server. Server A is
stopped longer than the liveness TTL + one heartbeat (6 s), so server B sweeps it:
its clients' leases and locks go, and another client takes them. When A runs again its
clients learn it (``leases_lost``/``locks_lost``, ``LockLostError``, ``LeaseLostError``), and a
grant Redis made to one of A's waiters before the sweep is never delivered.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import msgpack
import pytest
from google.protobuf import struct_pb2

from statehub import LeaseLostError, LockFailedError, LockLostError, StoreUnavailableError
from statehub.bench.fleet import start_redis, start_serve_ports, start_statehub, stop
from statehub.client import AsyncClient
from support import nanover_modules
from support.polling import eventually
from support.tcp_proxy import TcpProxy

state_pb2, state_pb2_grpc, _, _ = nanover_modules.load()

DEADLINE_S = 30.0


async def test_a_swept_servers_clients_are_told_and_get_no_late_grant(tmp_path: Path) -> None:
    redis_process = start_redis(tmp_path / "redis")
    processes: list[Any] = [redis_process.process]
    try:
        server_a, port_a = start_statehub(redis_process.url)
        processes.append(server_a)
        server_b, port_b = start_statehub(redis_process.url)
        processes.append(server_b)
        async with (
            AsyncClient("127.0.0.1", port_a, name="holder-on-a") as holder,
            AsyncClient("127.0.0.1", port_a, name="waiter-on-a") as waiter,
            AsyncClient("127.0.0.1", port_b, name="other-on-b") as other,
        ):
            lost: dict[str, list[str]] = {}
            holder.leases_lost.add_callback(lambda keys: lost.setdefault("leases", keys))
            holder.locks_lost.add_callback(lambda keys: lost.setdefault("locks", keys))

            assert await holder.attempt_update_locks({"leased": 60})
            held = await holder.acquire_lock("door", holder.new_owner("test"))
            kept = await other.acquire_lock("gate", other.new_owner("test"))
            waiting = asyncio.create_task(waiter.acquire_lock("gate", waiter.new_owner("test")))
            await _wait_for_waiters(other, "gate", 1)

            os.kill(server_a.pid, signal.SIGSTOP)
            try:
                # Redis grants the gate to A's waiter now; A hears of it only after the
                # sweep has released it again.
                await other.release_lock(kept)
                taker = other.new_owner("after-sweep")
                await other.acquire_lock("door", taker, timeout=DEADLINE_S)  # the sweep came
                await other.acquire_lock("gate", taker, timeout=DEADLINE_S)
                assert await other.attempt_update_locks({"leased": 60})
            finally:
                os.kill(server_a.pid, signal.SIGCONT)

            with pytest.raises(LockFailedError, match="cut off from Redis"):
                await asyncio.wait_for(waiting, DEADLINE_S)
            await eventually(lambda: "locks" in lost and "leases" in lost, timeout=DEADLINE_S)
            assert lost == {"leases": ["leased"], "locks": ["door"]}
            with pytest.raises(LockLostError, match="door"):
                await holder.release_lock(held)
            with pytest.raises(LeaseLostError, match="leased"):
                await holder.set("leased", "through a lease it lost")
            # Only the new holders hold them.
            holders = {lock.key: [h.client for h in lock.holders] for lock in await other.locks()}
            assert holders == {"door": ["other-on-b"], "gate": ["other-on-b"]}
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
            stop(process)


async def _wait_for_waiters(client: AsyncClient, key: str, count: int) -> None:

    async def waiting() -> bool:
        return any(lock.key == key and lock.waiting == count for lock in await client.locks())

    await eventually(waiting, f"{count} waiting for {key!r}", timeout=DEADLINE_S)


async def test_a_server_whose_redis_link_was_cut_past_the_sweep_tells_its_clients(
    tmp_path: Path,
) -> None:
    redis_process = start_redis(tmp_path / "redis")
    proxy = TcpProxy(redis_process.port)  # server A reaches Redis only through it
    processes: list[Any] = [redis_process.process]
    try:
        server_a, port_a = start_statehub(f"redis://127.0.0.1:{proxy.port}/0")
        processes.append(server_a)
        server_b, port_b = start_statehub(redis_process.url)
        processes.append(server_b)
        async with (
            AsyncClient("127.0.0.1", port_a, name="holder-on-a") as holder,
            AsyncClient("127.0.0.1", port_b, name="other-on-b") as other,
        ):
            lost: dict[str, list[str]] = {}
            holder.leases_lost.add_callback(lambda keys: lost.setdefault("leases", keys))
            holder.locks_lost.add_callback(lambda keys: lost.setdefault("locks", keys))
            assert await holder.attempt_update_locks({"leased": 60})
            held = await holder.acquire_lock("door", holder.new_owner("test"))

            proxy.cut()
            taken = await other.acquire_lock("door", other.new_owner("test"), timeout=DEADLINE_S)
            assert held.fence is not None and taken.fence is not None
            assert taken.fence > held.fence  # the resource can tell the holders apart
            proxy.restore()

            await eventually(lambda: "locks" in lost and "leases" in lost, timeout=DEADLINE_S)
            assert lost == {"leases": ["leased"], "locks": ["door"]}
            with pytest.raises(LockLostError, match="door"):
                await holder.release_lock(held)
            with pytest.raises(LeaseLostError, match="leased"):
                await holder.set("leased", "through a lease it lost")
    finally:
        proxy.close()
        for process in reversed(processes):
            stop(process)


async def test_a_swept_servers_nanover_clients_learn_what_they_lost(tmp_path: Path) -> None:
    """NanoVer's gRPC protocol cannot tell a client its lease is gone: its next write to the
    key is refused (``success=False``, as NanoVer refuses) instead of going through
    unguarded. A NanoVer WebSocket client, whose user's keys were bound to its connection,
    gets an ``error`` saying they were removed."""
    redis_process = start_redis(tmp_path / "redis")
    processes: list[Any] = [redis_process.process]
    try:
        server_a, ports_a = start_serve_ports("--store", redis_process.url)
        processes.append(server_a)
        server_b, port_b = start_statehub(redis_process.url)
        processes.append(server_b)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{ports_a.grpc}") as channel,
            AsyncClient("127.0.0.1", ports_a.tcp, name="witness-on-a") as witness,
            AsyncClient("127.0.0.1", port_b, name="other-on-b") as other,
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{ports_a.http}/") as headset,
        ):
            avatar = {"state": {"updates": {"avatar.u1": {"x": 1}}, "removals": []}}
            await headset.send_bytes(msgpack.packb(avatar))
            await eventually(lambda: _has(other, "avatar.u1"), timeout=DEADLINE_S)
            nanover = state_pb2_grpc.StateStub(channel)
            told: list[str] = []
            witness.leases_lost.add_callback(lambda keys: told.extend(keys))
            assert await witness.attempt_update_locks({"witness": 60})
            assert await _nanover_lease(nanover, "lab-token", "leased")
            assert await _nanover_write(nanover, "lab-token", {"leased": 1.0})

            os.kill(server_a.pid, signal.SIGSTOP)
            try:  # the sweep comes: the lease is free for B, which takes it and lets it go
                await eventually(
                    lambda: other.attempt_update_locks({"leased": 60}),
                    "the sweep freeing the lease for B",
                    timeout=DEADLINE_S,
                    interval=0.1,
                )
                assert await other.attempt_update_locks({"leased": None})
            finally:
                os.kill(server_a.pid, signal.SIGCONT)

            # server A has learnt it was swept; its link to Redis, idle past its read
            # timeout while stopped, may be away a moment longer
            await eventually(lambda: told == ["witness"], timeout=DEADLINE_S)
            await eventually(lambda: _writes(witness), "server A writing again", timeout=DEADLINE_S)
            assert await _next_error(headset) == "LeaseLostError"
            assert not await _nanover_write(nanover, "lab-token", {"leased": 2.0})
            assert not await _nanover_write(nanover, "lab-token", {}, removals=["leased"])
            assert await other.get("leased") == 1.0  # nothing of the refused writes applied
            assert await _nanover_write(nanover, "lab-token", {"unleased": 1.0})
            assert await _nanover_write(nanover, "another-token", {"leased": 3.0})

            assert await _nanover_lease(nanover, "lab-token", "leased")  # leased again
            assert await _nanover_write(nanover, "lab-token", {"leased": 4.0})
            assert await other.get("leased") == 4.0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
            stop(process)


async def _has(client: AsyncClient, key: str) -> bool:
    return key in await client.keys()


async def _writes(client: AsyncClient) -> bool:
    try:
        await client.set("probe", 1)
    except StoreUnavailableError:
        return False
    return True


async def _next_error(socket: aiohttp.ClientWebSocketResponse) -> str:
    """The type of the next ``error`` message on a NanoVer socket (state is skipped)."""
    async with asyncio.timeout(DEADLINE_S):
        async for message in socket:
            decoded = msgpack.unpackb(message.data)
            if "error" in decoded:
                return str(decoded["error"]["type"])
    raise AssertionError("the socket closed without an error message")


async def _nanover_lease(stub: Any, token: str, key: str) -> bool:
    locks = struct_pb2.Struct()
    locks.fields[key].number_value = 60.0
    request = state_pb2.UpdateLocksRequest(access_token=token, lock_keys=locks)
    return bool((await stub.UpdateLocks(request)).success)


async def _nanover_write(
    stub: Any, token: str, updates: dict[str, float], removals: tuple[str, ...] | list[str] = ()
) -> bool:
    changed = struct_pb2.Struct()
    for key, value in updates.items():
        changed.fields[key].number_value = value
    for key in removals:
        changed.fields[key].null_value = struct_pb2.NULL_VALUE
    request = state_pb2.UpdateStateRequest(
        access_token=token, update=state_pb2.StateUpdate(changed_keys=changed)
    )
    return bool((await stub.UpdateState(request)).success)
