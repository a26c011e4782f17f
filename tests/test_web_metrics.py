"""``/metrics``, ``/healthz``, ``/readyz`` on the web port and gRPC's health service."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from statehub import AsyncClient, DictionaryChange, SQLiteStore, StateDictionary, StateServer
from statehub.protocol import SERVICE_NAME
from support.polling import eventually
from support.raw_session import RemoteError, running_server, websocket_connected


async def scrape(server: StateServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by name and labels, parsed by prometheus_client."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_and_gauges_move_when_clients_act() -> None:
    async with running_server(http_port=0) as server:
        before = await scrape(server)
        assert value(before, "statehub_sessions", transport="websocket") == 0
        assert value(before, "statehub_requests_total", op="update", outcome="ok") == 0
        over_ws = AsyncClient(f"ws://127.0.0.1:{server.http_port}")
        over_grpc = AsyncClient(f"statehub+grpc://127.0.0.1:{server.grpc_port}")
        try:
            await over_ws.set("a", 1)
            await over_grpc.set("b", 2)
            assert await over_grpc.attempt_update_locks({"b": 60})
            assert not await over_ws.attempt_update_state(DictionaryChange({"b": 3}))
            async with over_ws.subscribe() as stream:
                await over_grpc.set("c", 3)
                async for change in stream:
                    if "c" in change.updates:
                        break
            held = await over_ws.acquire_lock("L", "metrics-test")
            samples = await scrape(server)
            assert value(samples, "statehub_sessions", transport="websocket") == 1
            assert value(samples, "statehub_sessions", transport="grpc") == 1
            assert value(samples, "statehub_leases") == 1
            assert value(samples, "statehub_rwlocks_held") == 1
            assert value(samples, "statehub_revision") == server.state.revision
            assert value(samples, "statehub_requests_total", op="update", outcome="ok") == 3
            assert (
                value(
                    samples, "statehub_requests_total", op="update", outcome="FAILED_PRECONDITION"
                )
                == 1
            )
            assert value(samples, "statehub_requests_total", op="lock", outcome="ok") == 1
            assert value(samples, "statehub_commit_seconds_count") == 3
            assert value(samples, "statehub_received_bytes_total", transport="websocket") > 0
            assert value(samples, "statehub_sent_bytes_total", transport="grpc") > 0
            assert value(samples, "statehub_deliveries_total") >= 1
            await over_ws.release_lock(held)
        finally:
            await over_ws.close()
            await over_grpc.close()
        await eventually(lambda: not server.hub.sessions)
        after = await scrape(server)
        assert value(after, "statehub_sessions", transport="websocket") == 0
        assert value(after, "statehub_leases") == 0
        assert value(after, "statehub_rwlocks_held") == 0
        assert value(after, "statehub_event_loop_lag_seconds") >= 0


async def test_fanout_groups_are_counted() -> None:
    async with running_server(http_port=0) as server:
        watchers = [AsyncClient("127.0.0.1", server.port) for _ in range(2)]
        try:
            streams = [watcher.subscribe(prefix="lab/") for watcher in watchers]
            for stream in streams:
                await stream.start()
            await eventually(lambda: sum(server.hub.fanout.sizes().values()) == 2)
            samples = await scrape(server)
            assert value(samples, "statehub_fanout_groups") == 1
            assert value(samples, "statehub_fanout_members") == 2
            for stream in streams:
                await stream.aclose()
        finally:
            for watcher in watchers:
                await watcher.close()
        await eventually(lambda: not server.hub.fanout.sizes())
        assert value(await scrape(server), "statehub_fanout_groups") == 0


async def test_errors_are_counted_by_op_and_status() -> None:
    async with running_server(http_port=0) as server, websocket_connected(server) as session:
        call = await session.send("call", name="no/such", arguments={})
        bad = await session.send("frobnicate")
        for request_id in (call, bad):
            with pytest.raises(RemoteError):
                await session.reply(request_id)
        samples = await scrape(server)
        assert value(samples, "statehub_requests_total", op="call", outcome="NOT_FOUND") == 1
        assert (
            value(samples, "statehub_requests_total", op="unknown", outcome="INVALID_ARGUMENT") == 1
        )


async def test_health_endpoints() -> None:
    async with running_server(http_port=0) as server, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{server.http_port}"
        async with http.get(f"{base}/healthz") as alive:
            assert alive.status == 200 and (await alive.json())["status"] == "alive"
        async with http.get(f"{base}/readyz") as ready:
            assert ready.status == 200 and (await ready.json())["status"] == "ready"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_NAME):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        server.state.freeze()
        async with http.get(f"{base}/readyz") as stopping:
            assert stopping.status == 503


async def test_a_durable_store_reports_fsyncs_and_durable_waits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, durability="disk")
    try:
        async with running_server(http_port=0, state=StateDictionary(store=store)) as server:
            client = AsyncClient(f"ws://127.0.0.1:{server.http_port}")
            try:
                revisions = await asyncio.gather(*(client.set(f"k{i}", i) for i in range(20)))
            finally:
                await client.close()
            samples = await scrape(server)
            assert value(samples, "statehub_store_durable_revision") >= max(revisions)
            fsyncs = value(samples, "statehub_store_fsyncs_total")
            assert 1 <= fsyncs <= 20
            assert value(samples, "statehub_durable_wait_seconds_count") >= 1
    finally:
        store.close()


async def test_sessions_over_plain_tcp_are_counted() -> None:
    async with running_server(http_port=0) as server:
        before = await scrape(server)
        key = ("statehub_sessions", (("transport", "tcp"),))
        assert before[key] == 0  # present (0) before any TCP client
        async with AsyncClient(f"statehub+tcp://127.0.0.1:{server.tcp_port}") as over_tcp:
            await over_tcp.set("a", 1)
            samples = await scrape(server)
            assert samples[key] == 1
            assert value(samples, "statehub_sessions", transport="grpc") == 0
        await eventually(lambda: not server.hub.sessions)
        assert (await scrape(server))[key] == 0
