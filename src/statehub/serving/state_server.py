"""StateServer: statehub's state, locks and commands served over plain TCP and gRPC.

Its ``port`` serves statehub's session protocol over plain TCP (``statehub://``, the
clients' default). Its ``grpc_port`` serves three protocols: the session protocol
(``/statehub.v1.Hub/Session``, ``statehub+grpc://``, see ``docs/protocol.md``), NanoVer's
gRPC-era state and command services, so NanoVer clients work unchanged, and Momotor's
shared locks (``/momotor.rpc.proto.Worker/sharedLock``, see ``docs/momotor.md``) over the
same locks. ``http_port`` adds the web edge. It has every method of NanoVer's
``NanoverServer``.

Everything network-facing runs in one asyncio event loop (grpc.aio): a subscriber costs a
task, not a thread. Use it inside a running loop (``await server.start()`` /
``await server.stop()``, or ``async with``), or from blocking code (``with StateServer(...)
as server:`` or ``start_in_thread()`` / ``close()``), which runs the loop in a background
thread.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from statehub.auth import Authenticator
from statehub.core.change import DictionaryChange
from statehub.core.commands import CommandRegistration, CommandRegistry, CommandRoute
from statehub.core.expiry import EXPIRY_BATCH
from statehub.core.values import JsonValue
from statehub.protocol import SERVICE_NAME
from statehub.protocol.ports import DEFAULT_GRPC_PORT, DEFAULT_TCP_PORT, GRPC_OFFSET, TCP_OFFSET
from statehub.server.grpc_transport import session_handler
from statehub.server.limits import SessionLimits, check_value_limits_fit
from statehub.server.nanover_profile import NanoverProfile
from statehub.server.session import Hub
from statehub.server.tcp_transport import start_tcp_server
from statehub.server.tls import ServerTls
from statehub.store.state_dictionary import StateDictionary
from statehub.web.origins import OriginPolicy

if TYPE_CHECKING:
    from statehub.web.edge import WebEdge

logger = logging.getLogger(__name__)

#: The plain-TCP session port, where clients look first (``statehub.protocol.ports``).
DEFAULT_PORT = DEFAULT_TCP_PORT
DEFAULT_ADDRESS = "127.0.0.1"
#: gRPC's own default receive limit; a request frame over it gets RESOURCE_EXHAUSTED.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: The server pings an idle connection every ``keepalive_time`` seconds and drops it when
#: no answer comes within ``keepalive_timeout``: a dead peer is noticed within their sum.
DEFAULT_KEEPALIVE_TIME = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 5.0
#: Seconds given to sessions to write what they still hold when the server stops.
STOP_GRACE = 2.0
#: The built-in command listing every command with its default arguments (as NanoVer).
LIST_COMMANDS = "commands/list"
#: The longest the expiry task sleeps: a key written with a ttl is removed at most this
#: long after its deadline (sooner when its deadline is already the next one).
EXPIRY_POLL_S = 0.1


class StateServer:
    """A statehub server: one shared state, its leases, read/write locks and commands.

    ``port`` is the plain-TCP session port; ``grpc_port`` the gRPC one (None: the next
    port, 38803 by default). ``port=0`` picks a free port for both (read them back from
    ``port`` and ``grpc_port`` once started); a port in use raises ``OSError`` when the
    server starts. ``limits`` bounds what each session may
    hold (see ``SessionLimits``). ``state`` (a ``StateDictionary``) and ``locks`` (its
    store's ``LockTable``, used from the server's event loop only: shared by every server
    over a shared store) are there for other server-side layers.
    ``http_port`` starts the web edge (None: off), in the same loop and with the same TLS.
    ``nanover=True`` adds NanoVer's standard server behaviours (``NanoverProfile``);
    ``nanover_max_message_bytes`` bounds NanoVer WebSocket messages (NanoVer's 128 MiB).
    ``allow_origins`` lists the web pages' origins (``https://host[:port]``, or ``*``),
    besides the web port's own, that may open its WebSockets (``docs/web.md``).
    """

    def __init__(
        self,
        *,
        address: str = DEFAULT_ADDRESS,
        port: int = DEFAULT_PORT,
        state: StateDictionary | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive_time: float = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        min_interval: float = 0.0,
        max_workers: int = 128,
        limits: SessionLimits | None = None,
        tls: ServerTls | None = None,
        auth: Authenticator | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        nanover: bool = False,
        nanover_max_message_bytes: int | None = None,
        allow_origins: Iterable[str] = (),
    ) -> None:
        if type(port) is not int or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
        if type(max_message_bytes) is not int or max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be an int >= 1024, got {max_message_bytes!r}")
        for name, seconds in (
            ("keepalive_time", keepalive_time),
            ("keepalive_timeout", keepalive_timeout),
        ):
            if type(seconds) not in (int, float) or not 0 < seconds < 86400:
                raise ValueError(f"{name} must be a number of seconds > 0, got {seconds!r}")
        if http_port is not None and (type(http_port) is not int or not 0 <= http_port <= 65535):
            raise ValueError(f"http_port must be None or an int from 0 to 65535, got {http_port!r}")
        if grpc_port is not None and (type(grpc_port) is not int or not 0 <= grpc_port <= 65535):
            raise ValueError(f"grpc_port must be None or an int from 0 to 65535, got {grpc_port!r}")
        if type(max_workers) is not int or max_workers < 1:
            raise ValueError(f"max_workers must be an int >= 1, got {max_workers!r}")
        if type(min_interval) not in (int, float) or not 0 <= min_interval < 86400:
            raise ValueError(f"min_interval must be a number of seconds >= 0, got {min_interval!r}")
        #: Origins besides the web port's own allowed to open its WebSockets.
        self.allow_origins = tuple(allow_origins)
        OriginPolicy(self.allow_origins)  # a malformed origin fails here, not at start()
        self.address = address
        self._requested_tcp_port = port
        self._requested_grpc_port = (
            grpc_port if grpc_port is not None else neighbour_port(port, GRPC_OFFSET - TCP_OFFSET)
        )
        self._grpc_port: int | None = None
        self._tcp_port: int | None = None
        self.max_message_bytes = max_message_bytes
        self.keepalive_time = float(keepalive_time)
        self.keepalive_timeout = float(keepalive_timeout)
        self.min_interval = float(min_interval)
        #: TLS of the port (None: plain TCP); its ``ssl_context()`` serves other ports alike.
        self.tls = tls
        self.state = state if state is not None else StateDictionary()
        check_value_limits_fit(self.state.value_limits, max_message_bytes)
        # NanoVer's max_workers sized the threads serving its calls; sessions need none
        # here, so it bounds the threads running blocking command callbacks instead.
        self._command_threads = ThreadPoolExecutor(max_workers, "statehub-command")
        self._commands = _command_registry(self.state, self._command_threads)
        self._commands.register(LIST_COMMANDS, self._list_commands)
        #: NanoVer's standard server behaviours (``nanover=True``; ``docs/nanover.md``).
        self.nanover_profile = (
            NanoverProfile(self.state, self._commands).install() if nanover else None
        )
        self.hub = Hub(
            state=self.state,
            commands=self._commands,
            max_message_bytes=max_message_bytes,
            keepalive_s=self.keepalive_time,
            min_interval=self.min_interval,
            limits=limits,
            auth=auth,
        )
        self.locks = self.hub.locks
        # Revisions restarted (the store lost its history): every client reconnects and
        # resubscribes from a snapshot of the new epoch.
        self.state.history_reset.add_callback(self.hub.end_sessions)
        # This server was cut off and swept: each session hears which holds it lost.
        self.state.holds_lost.add_callback(self.hub.holds_lost)
        self._grpc_server: aio.Server | None = None
        #: The standard gRPC health service (grpc.health.v1.Health) on the gRPC port.
        self.health = health.aio.HealthServicer()
        self._requested_http_port = http_port
        if nanover_max_message_bytes is not None and (
            type(nanover_max_message_bytes) is not int or nanover_max_message_bytes < 1024
        ):
            raise ValueError(
                "nanover_max_message_bytes must be None or an int >= 1024, "
                f"got {nanover_max_message_bytes!r}"
            )
        #: The NanoVer WebSocket edge's message limit (None: NanoVer's own, 128 MiB).
        self.nanover_max_message_bytes = nanover_max_message_bytes
        self.web: WebEdge | None = None
        self._tcp_server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._expiry_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients reach by default: the plain-TCP session port (``tcp_port``)."""
        return self.tcp_port

    @property
    def grpc_port(self) -> int:
        """The gRPC port (the one picked, if it was given as 0): ``statehub+grpc://``,
        NanoVer's gRPC-era services, Momotor's ``sharedLock``."""
        if self._grpc_port is None:
            raise RuntimeError("the server is not started: use start(), start_in_thread() or with")
        return self._grpc_port

    @property
    def http_port(self) -> int:
        """The web edge's port (HTTP, WebSocket, dashboard, /metrics); see ``docs/web.md``."""
        if self.web is None or self.web.port is None:
            raise RuntimeError("the web edge is not running: start the server with http_port")
        return self.web.port

    @property
    def tcp_port(self) -> int:
        """The plain-TCP session port (``statehub://``; the one picked, if it was given as
        0); see ``docs/protocol.md``."""
        if self._tcp_port is None:
            raise RuntimeError("the server is not started: use start(), start_in_thread() or with")
        return self._tcp_port

    @property
    def grpc_server(self) -> aio.Server:
        """The underlying grpc.aio server (for ``setup_services`` overrides adding services)."""
        if self._grpc_server is None:
            raise RuntimeError("the gRPC server exists only while the server is started")
        return self._grpc_server

    async def start(self) -> None:
        """Bind and start serving in the running event loop; ``OSError`` if the port is taken."""
        if self._grpc_server is not None or self._stopped:
            raise RuntimeError("a StateServer can be started once")
        self._loop = asyncio.get_running_loop()
        hard_limit = max(2 * self.max_message_bytes, self.max_message_bytes + 1024 * 1024)
        self._grpc_server = aio.server(
            # Runs plain (non-async) servicers, such as NanoVer's, added by setup_services.
            migration_thread_pool=self._command_threads,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", hard_limit),
                ("grpc.max_send_message_length", -1),
                ("grpc.keepalive_time_ms", int(self.keepalive_time * 1000)),
                ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * 1000)),
                # Recent gRPC cores time out an unanswered ping with this, not the above.
                ("grpc.http2.ping_timeout_ms", int(self.keepalive_timeout * 1000)),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        if self.nanover_profile is not None:
            await self.nanover_profile.start()
        self.setup_services()
        target = _host_port(self.address, self._requested_grpc_port)
        _check_free(self.address, self._requested_grpc_port, target)
        try:
            if self.tls is None:
                bound = self._grpc_server.add_insecure_port(target)
            else:
                bound = self._grpc_server.add_secure_port(target, self.tls.grpc_credentials())
        except RuntimeError as error:
            bound = 0
            reason = str(error).split(";")[0]
        else:
            reason = "gRPC could not bind it"
        if not bound:
            self._grpc_server = None
            self._stopped = True
            raise OSError(
                errno.EADDRINUSE,
                f"cannot listen for gRPC on {target}: the port is in use or the address is not "
                f"available here ({reason})",
            )
        self._grpc_port = bound
        await self.state.start()
        self._expiry_task = asyncio.create_task(self._expire(), name="statehub-expiry")
        await self._grpc_server.start()
        for service in ("", SERVICE_NAME):  # "": the server as a whole
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.debug("gRPC server listening on %s", _host_port(self.address, bound))
        await self._start_tcp(self._requested_tcp_port)
        if self._requested_http_port is not None:
            await self._start_web(self._requested_http_port)

    async def stop(self) -> None:
        """Freeze the state, end every session and stop serving (in the server's loop)."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        self.state.freeze()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._expiry_task
        if self._tcp_server is not None:
            self._tcp_server.close()  # accept no more connections; end_sessions ends the rest
        self.hub.end_sessions()
        if self._grpc_server is not None:
            await self._grpc_server.stop(STOP_GRACE)
        if self._tcp_server is not None:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._tcp_server.wait_closed(), STOP_GRACE)
        if self.web is not None:
            await self.web.stop()
        if self._grpc_server is not None:
            await self.state.stop()
        self._command_threads.shutdown(wait=False, cancel_futures=True)
        logger.debug("server on TCP %s, gRPC %s stopped", self._tcp_port, self._grpc_port)

    async def _expire(self) -> None:
        """Remove keys whose ttl ran out, in bounded batches (one commit each), so that a
        wave of expiring keys never stops the serving of others: after a full batch the
        task waits as long as the batch took, so expiry has at most half of the loop."""
        state = self.state
        failing = False
        # Not ``while True``: a store call that swallows the task's cancellation (seen with
        # Redis, a server stopped just after it started) would keep stop() waiting forever.
        while not self._stopped:
            try:
                started = time.perf_counter()
                if await state.expire_due_async(EXPIRY_BATCH) >= EXPIRY_BATCH:
                    await asyncio.sleep(time.perf_counter() - started)
                    continue
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a store that fails refuses writes too; keep trying
                if not failing:  # once per streak: Redis away would log ten times a second
                    logger.warning("removing expired keys failed (retrying): %s", error)
                failing = True
            left = state.next_expiry()
            await asyncio.sleep(EXPIRY_POLL_S if left is None else min(left, EXPIRY_POLL_S))

    async def _start_web(self, port: int) -> None:
        # imported here: aiohttp and the dashboard's edge cost a server without a web port
        # about half a second at start-up
        from statehub.web.edge import WebEdge

        self.web = WebEdge(
            self.hub,
            keepalive_time=self.keepalive_time,
            max_message_bytes=self.max_message_bytes,
            nanover_max_message_bytes=self.nanover_max_message_bytes,
            allow_origins=self.allow_origins,
        )
        try:
            await self.web.start(
                self.address, port, self.tls.ssl_context() if self.tls is not None else None
            )
        except OSError as error:
            await self.stop()
            raise OSError(
                errno.EADDRINUSE,
                f"cannot listen for HTTP on {_host_port(self.address, port)}: {error.strerror}",
            ) from error

    async def _start_tcp(self, port: int) -> None:
        try:
            self._tcp_server = await start_tcp_server(
                self.hub,
                self.address,
                port,
                keepalive_time=self.keepalive_time,
                keepalive_timeout=self.keepalive_timeout,
                ssl_context=self.tls.ssl_context() if self.tls is not None else None,
            )
            self._tcp_port = int(self._tcp_server.sockets[0].getsockname()[1])
        except OSError as error:
            await self.stop()
            raise OSError(
                errno.EADDRINUSE,
                f"cannot listen for TCP sessions on {_host_port(self.address, port)}: "
                f"{error.strerror}",
            ) from error

    def start_in_thread(self) -> StateServer:
        """Start serving from an event loop in a background thread; returns the server."""
        if self._thread is not None or self._grpc_server is not None:
            raise RuntimeError("a StateServer can be started once")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="statehub-server", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result()
        except BaseException:
            _stop_loop(loop, thread)
            raise
        self._thread = thread
        return self

    def close(self) -> None:
        """Freeze the state and stop the server (NanoVer's ``close``), from any other thread.

        Inside the server's own event loop, use ``await stop()`` instead.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stopped = True
            self.state.freeze()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("close() would block the server's own event loop: await stop()")
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result()
        if self._thread is not None:
            _stop_loop(loop, self._thread)
            self._thread = None

    def __enter__(self) -> StateServer:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> StateServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def setup_services(self) -> None:
        """Add the services to ``grpc_server``; override (calling this) to add more."""
        server = self.grpc_server
        server.add_generic_rpc_handlers((session_handler(self.hub),))
        # Imported here: it loads protobuf, which `import statehub` alone should not.
        from statehub.server.momotor_compat import momotor_handler
        from statehub.server.nanover_compat import add_nanover_services

        add_nanover_services(self.hub, server)
        server.add_generic_rpc_handlers((momotor_handler(self.hub),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)

    def reload_auth(self, auth: Authenticator) -> None:
        """Serve with new identities; sessions still allowed keep running (``Hub.replace_auth``).

        Call it in the server's event loop (``statehub serve`` does on SIGHUP).
        """
        self.hub.replace_auth(auth)

    # -- NanoVer's NanoverServer methods -------------------------------------------------

    def register_command(
        self,
        name: str,
        callback: Callable[..., Any],
        default_arguments: Mapping[str, Any] | None = None,
        *,
        route: CommandRoute | None = None,
    ) -> None:
        """Register a command clients can run; ``ValueError`` if the name is taken.

        With a store shared by several servers (Redis), the clients of every server can
        run it, and a name another server offers is taken (``route``: see
        ``CommandRoute``; ``docs/redis.md``).
        """
        self._commands.register(name, callback, default_arguments, route=route)

    def unregister_command(self, name: str) -> None:
        """Remove a command; ``KeyError`` if there is none by that name."""
        self._commands.unregister(name)

    @property
    def commands(self) -> dict[str, CommandRegistration]:
        """A copy of the registered commands by name (``commands/list`` included)."""
        return self._commands.commands

    def copy_state(self) -> dict[str, JsonValue]:
        """A deep copy of the current state."""
        return self.state.copy_content()

    @contextmanager
    def lock_state(self) -> Iterator[dict[str, JsonValue]]:
        """Read the state (a copy) while every change waits."""
        with self.state.lock_content() as content:
            yield content

    def update_state(self, access_token: object, change: DictionaryChange) -> int:
        """Apply ``change`` atomically as ``access_token`` (None: the server itself)."""
        return self.state.update_state(access_token, change)

    def update_locks(
        self,
        access_token: object = None,
        acquire: Mapping[str, float | None] | None = None,
        release: set[str] | None = None,
    ) -> None:
        """Release ``release``, then lease all of ``acquire`` or none (see StateDictionary)."""
        self.state.update_locks(access_token, acquire, release)

    def clear_locks(self) -> None:
        """Release every lease on every key."""
        self.state.clear_locks()

    def _list_commands(self) -> dict[str, JsonValue]:
        return {"list": self._commands.list()}


def _command_registry(state: StateDictionary, executor: ThreadPoolExecutor) -> CommandRegistry:
    """This server's commands, shared with the other servers of its store if it has peers."""
    peers = state.store.command_peers()
    if peers is None:
        return CommandRegistry(executor=executor)
    from statehub.server.shared_commands import SharedCommandRegistry

    return SharedCommandRegistry(peers, executor=executor, local_only=frozenset({LIST_COMMANDS}))


def neighbour_port(port: int, offset: int) -> int:
    """The port ``offset`` after ``port`` in the layout; a free one (0) when ``port`` is 0."""
    return 0 if port == 0 else (port + offset) % 65536


def _host_port(address: str, port: int) -> str:
    if ":" in address and not address.startswith("["):
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def _check_free(address: str, port: int, target: str) -> None:
    """``OSError`` if ``port`` is taken on ``address``, before gRPC tries it.

    gRPC would refuse too, but its core also prints an error line of its own to stderr.
    A probe socket with SO_REUSEADDR (as gRPC's listeners) fails only on a real listener.
    """
    if port == 0:
        return
    try:
        candidates = socket.getaddrinfo(
            address.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return  # gRPC reports an address it cannot resolve itself
    for family, kind, protocol, _, sockaddr in candidates:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise OSError(
                        errno.EADDRINUSE, f"cannot listen for gRPC on {target}: the port is in use"
                    ) from None


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_PORT",
    "StateServer",
    "neighbour_port",
]
