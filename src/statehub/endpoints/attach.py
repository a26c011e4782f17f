"""Serving endpoints on a server: their ``endpoint.*`` commands and the scheduler."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from statehub.core.commands import CommandRoute
from statehub.endpoints.config import EndpointsConfig
from statehub.endpoints.event_log import EventLog
from statehub.endpoints.service import Clock, EndpointService
from statehub.store.state_dictionary import StateDictionary


class CommandHost(Protocol):
    """What ``attach_endpoints`` needs of a server: its state and ``register_command``."""

    @property
    def state(self) -> StateDictionary: ...

    def register_command(
        self,
        name: str,
        callback: Callable[..., Any],
        default_arguments: Mapping[str, Any] | None = None,
        *,
        route: CommandRoute | None = None,
    ) -> None: ...


def attach_endpoints(
    server: CommandHost,
    config: EndpointsConfig,
    *,
    data_dir: str | Path | None = None,
    event_log: EventLog | None = None,
    clock: Clock = time.monotonic,
    wall_clock: Clock = time.time,
) -> EndpointService:
    """Serve ``config``'s endpoints on ``server``: lease and fill their keys, register the
    ``endpoint.*`` commands (routed by address: on servers sharing a state through Redis,
    a call from any server reaches the one serving the address). Start logging with
    ``start_scheduler()`` inside the server's loop. The event log is in memory, or in
    ``data_dir`` if given.

    If anything fails, what was done is undone (leases released) and the error raised:
    nothing runs half-configured.
    """
    if event_log is None:
        event_log = EventLog.in_directory(data_dir) if data_dir is not None else EventLog()
    service = EndpointService(
        server.state, config, event_log=event_log, clock=clock, wall_clock=wall_clock
    )
    registered: list[str] = []

    def detach() -> None:
        unregister = getattr(server, "unregister_command", None)
        if callable(unregister):
            for name in registered:
                with contextlib.suppress(KeyError):
                    unregister(name)

    service.on_close(detach)
    try:
        routes = service.command_routes()
        for name, callback in service.commands().items():
            server.register_command(name, callback, route=routes[name])
            registered.append(name)
    except BaseException:
        service.close()
        raise
    return service


@contextlib.asynccontextmanager
async def endpoints_running(
    server: CommandHost,
    config: EndpointsConfig,
    *,
    data_dir: str | Path | None = None,
) -> AsyncIterator[EndpointService]:
    """``attach_endpoints`` plus the scheduler task, for the body of the block.

    Use it inside the server's loop, around the time the server serves, and leave it
    before the server stops (which freezes the state)::

        async with server, endpoints_running(server, config, data_dir=data_dir):
            await stopped.wait()
    """
    service = attach_endpoints(server, config, data_dir=data_dir)
    try:
        service.start_scheduler()
        yield service
    finally:
        await service.stop_scheduler()
        service.close()
