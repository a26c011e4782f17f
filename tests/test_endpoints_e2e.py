"""Endpoints over a real server on 127.0.0.1, port 0: commands, typed errors with their
dripline codes, live events through a prefix subscription, the scheduler in the server's
loop, and the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from statehub import DictionaryChange, StateServer
from statehub.cli import main
from statehub.client import AsyncClient, Client
from statehub.endpoints.attach import attach_endpoints, endpoints_running
from statehub.endpoints.config import load_config, parse_config
from statehub.endpoints.return_codes import (
    AccessDeniedError,
    InvalidSpecifierError,
    InvalidValueError,
)
from statehub.endpoints.service import EndpointService
from statehub.errors import ResourceLockedError
from support.polling import eventually

FIXTURES = Path(__file__).parent / "fixtures"

CONFIG = """
name: lab
endpoints:
  - {name: peaches, initial_value: 0.75, calibration: '2*{}', get_on_set: true,
     log_on_set: true}
  - {name: status, initial_value: CLOSE, calibration: {CLOSE: "on", OPEN: "off"},
     log_interval: 0.02}
"""


@pytest.fixture
async def served() -> AsyncIterator[tuple[StateServer, EndpointService]]:
    server = StateServer(address="127.0.0.1", port=0)
    async with server, endpoints_running(server, parse_config(CONFIG, "e2e.yaml")) as service:
        yield server, service


async def test_endpoint_operations_over_the_network(
    served: tuple[StateServer, EndpointService],
) -> None:
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port) as client:
        assert await client.endpoint_get("lab.peaches") == {"value_raw": 0.75, "value_cal": 1.5}
        assert await client.endpoint_set("peaches", 2) == {"value_raw": 2, "value_cal": 4}
        assert await client.get("lab.peaches") == 2  # an ordinary key too
        assert await client.list_endpoints() == ["lab.peaches", "lab.status"]
        assert await client.endpoint_cmd("peaches", "ping") == {}
        history = await client.endpoint_history("peaches")
        assert [(e["value_raw"], e["value_cal"]) for e in history] == [(2, 4)]

        with pytest.raises(InvalidValueError) as invalid:
            await client.endpoint_set("status", "HALF")
        assert invalid.value.code == 304
        with pytest.raises(InvalidValueError, match=r"lab\.peaches: calibration '2") as big:
            await client.endpoint_set("peaches", 2**1023 - 1)  # 2*{} would not fit a double
        assert "over the limit of 1023 bits" in str(big.value)
        assert await client.get("lab.peaches") == 2  # refused: nothing stored
        with pytest.raises(InvalidSpecifierError) as specifier:
            await client.endpoint_get("peaches", "colour")
        assert specifier.value.code == 310
        with pytest.raises(ResourceLockedError):
            await client.set("lab.peaches", 99)  # a plain write cannot bypass the service


async def test_lockout_over_the_network(served: tuple[StateServer, EndpointService]) -> None:
    server, _ = served
    async with (
        AsyncClient("127.0.0.1", server.port) as alice,
        AsyncClient("127.0.0.1", server.port) as bob,
    ):
        key = await alice.endpoint_lock("lab", tag="alice")
        assert await bob.endpoint_get("peaches", "is-locked") == {
            "is_locked": True,
            "tag": "alice",
        }
        with pytest.raises(AccessDeniedError) as denied:
            await bob.endpoint_set("peaches", 1)
        assert (denied.value.code, denied.value.code_name) == (307, "access denied")
        assert "307 access denied" in str(denied.value)
        assert await bob.endpoint_get("peaches") == {"value_raw": 0.75, "value_cal": 1.5}
        assert await alice.endpoint_set("peaches", 1, lockout_key=key) == {
            "value_raw": 1,
            "value_cal": 2,
        }
        with pytest.raises(AccessDeniedError):
            await bob.endpoint_unlock("lab")
        assert await alice.endpoint_unlock("lab", key) == {"unlocked": True}
        assert (await bob.endpoint_unlock("lab"))["warning"] == "lab is already unlocked"


async def test_logged_values_are_live_events_and_history(
    served: tuple[StateServer, EndpointService],
) -> None:
    server, service = served
    seen: list[dict[str, object]] = []
    async with AsyncClient("127.0.0.1", server.port) as client:
        async with client.subscribe(prefix="sensor_value.") as stream:
            # The scheduler (a task in the server's loop) logs status's first value.
            async def collect() -> None:
                async for change in stream:
                    seen.extend(
                        value
                        for key, value in change.updates.items()
                        if key == "sensor_value.lab.status"
                    )
                    if any(event["value_raw"] == "OPEN" for event in seen):
                        return

            collector = asyncio.create_task(collect())
            await eventually(lambda: bool(seen))
            assert seen[0]["value_raw"] == "CLOSE" and seen[0]["value_cal"] == "on"
            await client.endpoint_set("status", "OPEN")
            await asyncio.wait_for(collector, 10)
        assert seen[-1]["value_cal"] == "off"
        history = await client.endpoint_history("status", since=time.time() - 60)
        assert [event["value_raw"] for event in history] == ["CLOSE", "OPEN"]
        assert await client.endpoint_history("status", since=time.time() + 60) == []
    assert service.next_due() is not None


def test_sync_client_and_cli() -> None:
    server = StateServer(address="127.0.0.1", port=0).start_in_thread()
    service = attach_endpoints(server, load_config(FIXTURES / "endpoints_dripline.yaml"))
    try:
        with Client("127.0.0.1", server.port) as client:
            assert client.endpoint_set("peaches", 3) == {"value_raw": 3, "value_cal": 6}
            key = client.endpoint_lock("peaches_status")
            with pytest.raises(AccessDeniedError):
                client.endpoint_set("peaches_status", "OPEN")

        def cli(*args: str) -> tuple[int, str]:
            result = CliRunner().invoke(
                main, [*args, "--host", "127.0.0.1", "--port", str(server.port)]
            )
            return result.exit_code, result.output

        assert cli("endpoint", "get", "my_store.peaches") == (
            0,
            '{"value_raw": 3, "value_cal": 6}\n',
        )
        assert cli("endpoint", "set", "peaches", "4.5")[1] == (
            '{"value_raw": 4.5, "value_cal": 9.0}\n'
        )
        code, output = cli("endpoint", "set", "peaches_status", "OPEN")
        assert code == 1 and "AccessDeniedError: 307 access denied" in output
        assert cli("endpoint", "set", "peaches_status", "OPEN", "--lockout-key", key) == (0, "{}\n")
        assert cli("endpoint", "cmd", "peaches_status", "unlock", "force=true") == (
            0,
            '{"unlocked": true}\n',
        )
        assert cli("endpoint", "get", "peaches_status", "--specifier", "is-locked")[1] == (
            '{"is_locked": false, "tag": null}\n'
        )
        assert cli("endpoint", "list") == (0, "my_store.peaches\nmy_store.peaches_status\n")
        code, output = cli("endpoint", "get", "nothing")
        assert code == 1 and "102 invalid routing key" in output
        code, output = cli("history", "peaches", "--since", "10m", "--json")
        assert code == 0
        assert [json.loads(line)["value_raw"] for line in output.splitlines()] == [3, 4.5]
        code, output = cli("history", "peaches")
        assert code == 0 and "value_raw=4.5  value_cal=9.0" in output.splitlines()[-1]
        code, output = cli("history", "peaches", "--since", "soon")
        assert code == 2 and "not a time" in output
    finally:
        server.close()
        service.close()


async def test_closing_the_service_unregisters_its_commands() -> None:
    server = StateServer(address="127.0.0.1", port=0)
    async with server:
        async with endpoints_running(server, parse_config(CONFIG)):
            assert "endpoint.get" in server.commands
        assert not any(name.startswith("endpoint.") for name in server.commands)
        # The keys are plain keys again.
        server.state.update_state("anyone", DictionaryChange({"lab.peaches": 1}))


def test_cli_on_a_server_without_endpoints_says_so() -> None:
    server = StateServer(address="127.0.0.1", port=0).start_in_thread()
    try:
        result = CliRunner().invoke(
            main, ["endpoint", "get", "foo", "--host", "127.0.0.1", "--port", str(server.port)]
        )
    finally:
        server.close()
    assert result.exit_code == 1
    assert "serves no endpoints (start it with 'statehub serve --config FILE.yaml')" in (
        result.output
    )
