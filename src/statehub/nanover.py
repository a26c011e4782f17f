"""``NanoverServer``: NanoVer's gRPC-era server class, served by statehub.

NanoVer's server-side code builds ``NanoverServer(address=..., port=...)`` and expects it
to be serving when the constructor returns, to raise ``OSError`` for a port in use, and to
offer ``server``, ``add_service``, ``address_and_port``, ``logger``, ``run_command`` and
``state_dictionary``. This class is statehub's ``StateServer`` with that shape, so such
code runs unchanged; NanoVer's clients reach it through the NanoVer-compatible services.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Protocol

from grpc import aio

from statehub.core.commands import CommandResult
from statehub.serving.state_server import StateServer
from statehub.store.state_dictionary import StateDictionary

#: NanoVer's default number of worker threads.
DEFAULT_MAX_WORKERS = 128


class NanoverService(Protocol):
    """What NanoVer's ``add_service`` takes: a servicer carrying the generated adder."""

    add_to_server_method: Any


class NanoverServer(StateServer):
    """A ``StateServer`` that serves from construction on, as NanoVer's ``NanoverServer``.

    ``port=0`` picks a free port (read it back from ``port``); a port in use raises
    ``OSError`` from the constructor. The server runs its event loop in a background
    thread; ``close()`` (or leaving a ``with`` block) stops it. Servicers added with
    ``add_service`` may be NanoVer's plain (threaded) servicers: they run in the worker
    threads, at most ``max_workers`` at a time.
    """

    def __init__(
        self,
        *,
        address: str,
        port: int,
        max_workers: int = DEFAULT_MAX_WORKERS,
        **options: Any,
    ) -> None:
        # NanoVer's port is the gRPC one; the plain-TCP session port takes a free one.
        super().__init__(
            address=address, port=0, grpc_port=port, max_workers=max_workers, **options
        )
        self.logger = logging.getLogger(__name__)
        self.start_in_thread()
        self.logger.info("Running server %s on port %s", type(self).__name__, self.port)

    @property
    def port(self) -> int:
        """The gRPC port, where NanoVer's clients reach this server (``tcp_port``: the
        plain-TCP session port)."""
        return self.grpc_port

    @property
    def server(self) -> aio.Server:
        """The underlying gRPC server (NanoVer's ``server`` attribute)."""
        return self.grpc_server

    @property
    def address_and_port(self) -> tuple[str, int]:
        """The address and port served on."""
        return self.address, self.port

    @property
    def state_dictionary(self) -> StateDictionary:
        """The shared state (a ``StateDictionary``)."""
        return self.state

    def add_service(self, service: NanoverService) -> None:
        """Add a gRPC servicer that carries its generated ``add_*_to_server`` function."""
        try:
            add_to_server = service.add_to_server_method
        except AttributeError:
            raise AttributeError(
                f"{type(service).__name__} has no add_to_server_method attribute: cannot add it "
                "to the gRPC server (set it to the generated add_*Servicer_to_server function)"
            ) from None
        add_to_server(service, self.server)

    def run_command(self, name: str, arguments: dict[str, Any] | None = None) -> CommandResult:
        """Run a registered command in this thread, as a client would; returns its result."""
        return self._commands.run(name, arguments)

    def __enter__(self) -> NanoverServer:
        return self  # already serving since the constructor

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["DEFAULT_MAX_WORKERS", "NanoverServer", "NanoverService"]
