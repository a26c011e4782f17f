"""What the dripline tests share: the endpoint configuration they serve (with an
endpoint module of commands of its own and an application return code)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

from statehub import StateServer
from statehub.core.values import JsonValue
from statehub.dripline.mesh import MeshService
from statehub.dripline.settings import MeshSettings
from statehub.endpoints.attach import endpoints_running
from statehub.endpoints.config import parse_config
from statehub.endpoints.nodes import Endpoint, register_endpoint_module
from statehub.endpoints.return_codes import define_return_code
from statehub.endpoints.service import EndpointService

LAB = """
name: lab
endpoints:
  - {name: peaches, initial_value: 0.75, calibration: '2*{}', get_on_set: true,
     log_on_set: true}
  - {name: status, initial_value: CLOSE, calibration: {CLOSE: "on", OPEN: "off"}}
  - {name: plain, initial_value: 1}
  - {name: pump, module: test_pump, initial_value: 10}
"""

PumpOverheatedError = define_return_code(1234, "pump overheated", "TestPumpOverheatedError")


class Pump(Endpoint):
    """An endpoint with commands of its own, one of which fails with an application code."""

    def cmd_scale(self, factor: float, offset: float = 0) -> dict[str, JsonValue]:
        value = self.on_get()
        assert isinstance(value, int | float)
        scaled = value * factor + offset
        self.on_set(scaled)
        return {"value_raw": scaled}

    def cmd_overheat(self) -> dict[str, JsonValue]:
        raise PumpOverheatedError(f"{self.address} is too hot to run")


register_endpoint_module("test_pump", Pump)


@dataclasses.dataclass
class Served:
    server: StateServer
    endpoints: EndpointService
    mesh: MeshService


@contextlib.asynccontextmanager
async def serving(
    config: str, settings: MeshSettings, *, connect: bool = True
) -> AsyncIterator[Served]:
    """A statehub server on 127.0.0.1 serving ``config``'s endpoints, on the mesh too
    (connected, unless ``connect`` is false)."""
    server = StateServer(address="127.0.0.1", port=0)
    async with server, endpoints_running(server, parse_config(config, "lab.yaml")) as endpoints:
        mesh = MeshService(endpoints, settings, backoff_initial=0.1, backoff_max=0.5)
        async with mesh:
            if connect:
                await mesh.wait_connected(30)
            yield Served(server, endpoints, mesh)
