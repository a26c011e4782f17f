"""``statehub serve``: run a StateServer until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import cast

import click

from statehub.auth import Authenticator, IdentitiesFileError
from statehub.cli.options import listen_host
from statehub.cli.settings import log_sources, settings_option
from statehub.core.key_history import HistoryRetention
from statehub.core.limits import MAX_VALUE_BYTES, ValueSizeLimits
from statehub.dripline.serving import mesh_for, on_mesh
from statehub.dripline.settings import MeshSettings, MeshSettingsError
from statehub.endpoints.attach import endpoints_running
from statehub.endpoints.config import ConfigError, EndpointsConfig, load_config
from statehub.errors import DataDirectoryError, DataFileError, StoreUnavailableError
from statehub.extras import require_extra
from statehub.protocol.ports import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_TCP_PORT,
    GRPC_OFFSET,
    TCP_OFFSET,
)
from statehub.server.connections import RateLimitedLoopErrors
from statehub.server.discovery import BROADCAST_ADDRESS, ESSD_PORT, Discovery
from statehub.server.limits import SessionLimits, check_value_limits_fit
from statehub.server.memory import return_large_buffers_to_the_os
from statehub.server.tls import ServerTls
from statehub.serving.state_server import (
    DEFAULT_ADDRESS,
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_BYTES,
    StateServer,
    neighbour_port,
)
from statehub.store.base import Store
from statehub.store.sqlite import DURABILITY_MODES, Durability, SQLiteStore
from statehub.store.state_dictionary import StateDictionary
from statehub.web.nanover_socket import MAX_MESSAGE_BYTES as NANOVER_MAX_MESSAGE_BYTES
from statehub.web.origins import OriginPolicy

_LIMIT_DEFAULTS = {field.name: field.default for field in dataclasses.fields(SessionLimits)}

logger = logging.getLogger(__name__)


@settings_option(tables={"session_limit": _LIMIT_DEFAULTS})
@click.command()
@click.option(
    "--host",
    "-h",
    default=DEFAULT_ADDRESS,
    callback=listen_host,
    show_default=True,
    help="Address to listen on (0.0.0.0 or :: to serve other machines).",
)
@click.option(
    "--port",
    "-p",
    default=DEFAULT_HTTP_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Base port: the web edge on BASE, plain-TCP sessions (statehub://) on BASE+1, gRPC "
    "on BASE+2; 0 picks a free port for each (printed at start).",
)
@click.option(
    "--http-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Port of the web edge (dashboard, NanoVer's WebSocket protocol, WebSocket sessions, "
    f"/metrics); 0 picks a free one. Default: --port ({DEFAULT_HTTP_PORT}). See docs/web.md.",
)
@click.option("--no-http", is_flag=True, help="No web edge.")
@click.option(
    "--allow-origin",
    "allow_origins",
    multiple=True,
    metavar="URL",
    help="A web page origin (scheme://host[:port]) allowed to open the web edge's WebSockets, "
    "besides the web edge's own (repeatable; '*' allows every page). Clients that send no "
    "Origin (not browsers) are never refused. See docs/web.md.",
)
@click.option(
    "--tcp-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Port of the session protocol over plain TCP, where clients go by default "
    "(statehub://host, statehubs:// with TLS); 0 picks a free one. Default: --port + 1 "
    f"({DEFAULT_TCP_PORT}). See docs/protocol.md.",
)
@click.option(
    "--grpc-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Port of gRPC: sessions under statehub+grpc://, NanoVer's gRPC-era services, "
    "Momotor's sharedLock; 0 picks a free one. Default: --port + 2 "
    f"({DEFAULT_GRPC_PORT}).",
)
@click.option(
    "--interval",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 86400, max_open=True),
    help="Shortest interval between two change batches to one subscriber, in seconds; "
    "subscriptions asking for less get this (0: each gets what it asks for).",
)
@click.option(
    "--max-message-bytes",
    default=DEFAULT_MAX_MESSAGE_BYTES,
    show_default=True,
    type=click.IntRange(1024),
    help="Largest request frame accepted, and largest frame sent where possible.",
)
@click.option(
    "--keepalive",
    default=DEFAULT_KEEPALIVE_TIME,
    show_default=True,
    type=click.FloatRange(0, 86400, min_open=True, max_open=True),
    help="Seconds of silence after which the server pings a client (HTTP/2 pings over "
    "gRPC, the session's heartbeat over plain TCP).",
)
@click.option(
    "--keepalive-timeout",
    default=DEFAULT_KEEPALIVE_TIMEOUT,
    show_default=True,
    type=click.FloatRange(0, 86400, min_open=True, max_open=True),
    help="Seconds without a ping answer after which a client is dropped (its leases, "
    "locks and bound keys released): a frozen client goes within keepalive + this.",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the state in SQLite in this directory (created if missing); without it the "
    "state lives in memory and a restart loses it.",
)
@click.option(
    "--durability",
    type=click.Choice(DURABILITY_MODES),
    default=None,
    help="With --data: acknowledge a change once it is on disk (the default), or once it is "
    "in memory (faster; a crash loses the last acknowledged changes).",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    metavar="URL",
    help="Share the state with every server using the same Redis: redis://host:port/db, "
    "rediss://..., or redis+sentinel://host:port[,host:port]/service[/db] (see "
    "docs/redis.md). Without it (and without --data) the state lives in memory.",
)
@click.option(
    "--replicas",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="With --store: acknowledge a change only once this many Redis replicas have it "
    "(Redis WAIT), so that a failover loses no acknowledged change.",
)
@click.option(
    "--accept-data-loss",
    is_flag=True,
    help="With --data: start even though changes acknowledged as durable are missing "
    "(a lost or damaged write-ahead log); without it such a start is refused "
    "(docs/durable-state.md).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Serve the dripline-style endpoints of this YAML file (checked before anything "
    "starts; logged values go to endpoint-events.sqlite3 in --data, else memory).",
)
@click.option(
    "--discoverable",
    is_flag=True,
    help="Announce this server by ESSD discovery (UDP broadcast, as NanoVer servers do) so "
    "headsets find it; use with --host 0.0.0.0 to let them connect.",
)
@click.option(
    "--discovery-port",
    default=ESSD_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="With --discoverable: UDP port the announcements go to.",
)
@click.option(
    "--discovery-address",
    default=BROADCAST_ADDRESS,
    show_default=True,
    help="With --discoverable: address the announcements go to (a broadcast address).",
)
@click.option(
    "--name",
    default=None,
    help="With --discoverable: the server name headsets show (default: statehub on <host>).",
)
@click.option(
    "--nanover-max-message-bytes",
    default=NANOVER_MAX_MESSAGE_BYTES,
    show_default=True,
    type=click.IntRange(1024),
    help="Largest message a NanoVer WebSocket client may send (NanoVer's own: 128 MiB); "
    "larger ones close its connection with 1009.",
)
@click.option(
    "--nanover",
    is_flag=True,
    help="Behave as NanoVer's standard server: imd.velocity_reset_available at start, "
    "scene mirrored into transform.simulation and back, multiuser/radially-orient-origins.",
)
@click.option(
    "--session-limit",
    "session_limits",
    multiple=True,
    metavar="NAME=VALUE",
    help="Change one per-session bound (repeatable): "
    + ", ".join(f"{name} (default {value})" for name, value in _LIMIT_DEFAULTS.items())
    + ".",
)
@click.option(
    "--auth",
    "auth_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Identities file (YAML or TOML): users, roles and their rights; without it anyone "
    "may do anything. Reloaded on SIGHUP. See docs/security.md.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TLS certificate chain (PEM) of this server; with --tls-key, clients connect with "
    "statehubs://host:port.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Private key (PEM) of the --tls-cert certificate.",
)
@click.option(
    "--tls-client-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Require client certificates signed by this CA (PEM) (mutual TLS); their names "
    "identify clients to the --auth file.",
)
@click.option(
    "--dripline",
    "dripline_url",
    metavar="URL",
    default=None,
    help="Also serve the --config endpoints as dripline services on this RabbitMQ broker "
    "(amqp://user:pass@host:5672/; credentials also from DRIPLINE_USER/DRIPLINE_PASSWORD). "
    "A dripline_mesh block in the config does the same without it.",
)
@click.option(
    "--history",
    "history_versions",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    metavar="N",
    help="Keep the last N versions of every key (value or removal, revision, time, who), "
    "read by `statehub history KEY`; 0: none. Kept in --data across restarts, and in Redis "
    "with --store (one setting for every server over it).",
)
@click.option(
    "--history-prefix",
    "history_prefixes",
    multiple=True,
    metavar="PREFIX=N",
    help="Keys starting with PREFIX keep N versions instead of --history's (repeatable; "
    "the longest matching prefix wins; N=0: none).",
)
@click.option(
    "--history-age",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --history: keep no version older than SECONDS.",
)
@click.option(
    "--value-limit",
    "value_limits",
    multiple=True,
    metavar="[PREFIX=]BYTES",
    help="Largest value (estimated bytes) a key may hold: BYTES for every key (default "
    "3 MiB), PREFIX=BYTES for keys under PREFIX (repeatable; the longest matching prefix "
    "wins). Above 3 MiB it needs --max-message-bytes 1 MiB larger.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Log statehub's debug messages (each session's start and end).",
)
def serve(
    host: str,
    port: int,
    http_port: int | None,
    no_http: bool,
    allow_origins: tuple[str, ...],
    tcp_port: int | None,
    grpc_port: int | None,
    interval: float,
    max_message_bytes: int,
    keepalive: float,
    keepalive_timeout: float,
    data: Path | None,
    durability: str | None,
    store_url: str | None,
    replicas: int,
    accept_data_loss: bool,
    config_path: Path | None,
    discoverable: bool,
    discovery_port: int,
    discovery_address: str,
    name: str | None,
    nanover_max_message_bytes: int,
    nanover: bool,
    session_limits: tuple[str, ...],
    auth_path: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
    dripline_url: str | None,
    history_versions: int,
    history_prefixes: tuple[str, ...],
    value_limits: tuple[str, ...],
    history_age: float | None,
    verbose: bool,
) -> None:
    """Start a statehub server: the web edge on --port (38801), plain-TCP sessions on
    the next port, gRPC (NanoVer's gRPC-era services, Momotor's sharedLock) on the one after.

    Runs until Ctrl-C or SIGTERM, then ends every session cleanly.
    """
    _configure_logging(verbose)
    log_sources(click.get_current_context())
    limits = _parse_limits(session_limits)
    _check_origins(allow_origins)
    endpoints = _load_endpoints(config_path)
    try:
        mesh = mesh_for(dripline_url, endpoints, str(config_path))
    except MeshSettingsError as error:
        raise click.ClickException(str(error)) from None
    authenticator = _load_auth(auth_path)
    tls = _load_tls(tls_cert, tls_key, tls_client_ca)
    if host not in ("127.0.0.1", "localhost", "::1"):
        _warn_if_open(host, authenticator is not None, tls is not None)
    history = HistoryRetention(
        versions=history_versions, age=history_age, prefixes=_parse_prefixes(history_prefixes)
    )
    if history_age is not None and not history.enabled:
        raise click.UsageError("--history-age needs --history N or --history-prefix (N > 0)")
    value_size_limits = _parse_value_limits(value_limits)
    try:  # before a store is opened: nothing to close when it does not fit
        check_value_limits_fit(value_size_limits, max_message_bytes)
    except ValueError as error:
        raise click.UsageError(f"--value-limit: {error}") from None
    store: Store | None
    if store_url is not None:
        if data is not None or durability is not None or accept_data_loss:
            raise click.UsageError("--store and --data/--durability exclude each other")
        store = _open_redis_store(store_url, replicas)
    else:
        if replicas:
            raise click.UsageError("--replicas needs --store (Redis replicas)")
        store = _open_store(data, durability, accept_data_loss)
    server = StateServer(
        state=StateDictionary(store=store, history=history, value_limits=value_size_limits),
        address=host,
        port=_chosen_port(tcp_port, port, TCP_OFFSET),
        grpc_port=_chosen_port(grpc_port, port, GRPC_OFFSET),
        max_message_bytes=max_message_bytes,
        keepalive_time=keepalive,
        keepalive_timeout=keepalive_timeout,
        min_interval=interval,
        limits=limits,
        tls=tls,
        auth=authenticator,
        http_port=None if no_http else _chosen_port(http_port, port, 0),
        nanover=nanover,
        nanover_max_message_bytes=nanover_max_message_bytes,
        allow_origins=allow_origins,
    )
    try:
        discovery = (
            Discovery(
                name or f"statehub on {socket.gethostname()}", discovery_address, discovery_port
            )
            if discoverable
            else None
        )
        return_large_buffers_to_the_os()  # memory a dropped client held goes back
        asyncio.run(_serve(server, endpoints, data, auth_path, discovery, mesh))
    except OSError as error:
        raise click.ClickException(str(error.strerror or error)) from None
    finally:
        if store is not None:
            store.close()  # writes what is queued; the next start keeps the revision exactly


def _parse_prefixes(settings: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """``--history-prefix PREFIX=N`` options as (prefix, N) pairs."""
    rules = []
    for setting in settings:
        prefix, equals, count = setting.rpartition("=")
        if not equals or not count.isdigit():
            raise click.BadParameter(
                f"{setting!r}: expected PREFIX=N with N a number of versions >= 0",
                param_hint="--history-prefix",
            )
        rules.append((prefix, int(count)))
    return tuple(rules)


def _parse_value_limits(settings: tuple[str, ...]) -> ValueSizeLimits:
    """``--value-limit [PREFIX=]BYTES`` options as the state's value size limits."""
    default, prefixes = MAX_VALUE_BYTES, []
    for setting in settings:
        prefix, equals, size = setting.rpartition("=")
        if not size.isdigit() or int(size) < 1:
            raise click.BadParameter(
                f"{setting!r}: expected BYTES or PREFIX=BYTES with BYTES a whole number >= 1",
                param_hint="--value-limit",
            )
        if equals:
            prefixes.append((prefix, int(size)))
        else:
            default = int(size)
    return ValueSizeLimits(default, tuple(prefixes))


def _configure_logging(verbose: bool) -> None:
    """Warnings from everything; statehub's own info (-v: debug) logs, not asyncio's or grpc's."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("statehub").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _parse_limits(settings: tuple[str, ...]) -> SessionLimits:
    """``NAME=VALUE`` settings over the documented defaults; a bad one names itself."""
    values: dict[str, int] = {}
    for setting in settings:
        name, equals, text = setting.partition("=")
        if not equals or name not in _LIMIT_DEFAULTS:
            raise click.BadParameter(
                f"{setting!r}: expected NAME=VALUE with NAME one of {', '.join(_LIMIT_DEFAULTS)}",
                param_hint="--session-limit",
            )
        try:
            values[name] = int(text.replace("_", ""))
        except ValueError:
            raise click.BadParameter(
                f"{setting!r}: {text!r} is not a whole number", param_hint="--session-limit"
            ) from None
    try:
        return SessionLimits(**values)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--session-limit") from None


def _check_origins(origins: tuple[str, ...]) -> None:
    """A malformed ``--allow-origin`` stops start-up, naming it."""
    try:
        OriginPolicy(origins)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--allow-origin") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _chosen_port(chosen: int | None, base: int, offset: int) -> int:
    """The port asked for, else the base port + ``offset`` (a free one when ``base`` is 0)."""
    return chosen if chosen is not None else neighbour_port(base, offset)


def served_addresses(server: StateServer) -> list[str]:
    """The start-up lines naming every address served, the default one first (scripts
    and supervisors read the port from its ``serving on HOST:PORT``)."""
    host = _url_host(server.address)
    secure = "s" if server.tls is not None else ""
    lines = [
        f"statehub serving on {host}:{server.tcp_port} "
        f"(statehub{secure}://{host}:{server.tcp_port}; Ctrl-C to stop)"
    ]
    if server.web is not None:
        lines.append(
            f"statehub web edge on http{secure}://{host}:{server.http_port}/ "
            f"(dashboard; NanoVer ws{secure}://{host}:{server.http_port})"
        )
    lines.append(
        f"statehub gRPC on {host}:{server.grpc_port} "
        f"(statehub{secure}+grpc://{host}:{server.grpc_port}; NanoVer gRPC, Momotor)"
    )
    return lines


class DataDirectoryProblem(click.ClickException):
    """A ``--data`` directory that cannot be created or written: one line, exit status 2,
    as for any other bad option value (a data file that cannot be used stays 1)."""

    exit_code = 2


def _open_store(
    data: Path | None, durability: str | None, accept_data_loss: bool = False
) -> SQLiteStore | None:
    """The SQLite store in ``data`` (None: state in memory); a bad data file stops here."""
    if data is None:
        if durability is not None:
            raise click.UsageError("--durability needs --data (without it nothing is on disk)")
        if accept_data_loss:
            raise click.UsageError("--accept-data-loss needs --data")
        return None
    try:
        return SQLiteStore(
            data,
            durability=cast(Durability, durability or "disk"),
            accept_data_loss=accept_data_loss,
        )
    except DataDirectoryError as error:
        raise DataDirectoryProblem(str(error)) from None
    except DataFileError as error:
        raise click.ClickException(str(error)) from None


def _open_redis_store(url: str, replicas: int) -> Store:
    """The Redis store at ``url``; a bad URL or no Redis stops here."""
    require_extra("redis", "--store redis://")
    from statehub.store.redis import RedisStore

    try:
        store = RedisStore(url, replicas=replicas)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--store") from None
    except StoreUnavailableError as error:
        raise click.ClickException(str(error)) from None
    return store


def _warn_if_open(host: str, auth: bool, tls: bool) -> None:
    """Serving other machines: say what anyone on the network could do or see."""
    if not auth:
        click.echo(
            f"statehub: WARNING: serving on {host} without --auth: anyone who can reach this "
            "port can read and change the state, take leases and run commands "
            "(see docs/security.md)",
            err=True,
        )
    elif not tls:
        click.echo(
            f"statehub: WARNING: serving on {host} with --auth but without TLS: tokens and "
            "values cross the network readable by anyone on it (add --tls-cert/--tls-key)",
            err=True,
        )


def _load_auth(path: Path | None) -> Authenticator | None:
    """The identities; a bad file stops start-up naming file, entry and field."""
    if path is None:
        return None
    try:
        return Authenticator.from_file(path)
    except IdentitiesFileError as error:
        raise click.ClickException(f"bad identities file: {error}") from None


def _load_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
    if cert is None and key is None:
        if client_ca is not None:
            raise click.UsageError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        return ServerTls.from_files(cert, key, client_ca)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


def reload_identities(server: StateServer, path: Path) -> None:
    """SIGHUP: read the identities again; a bad file is refused and the old one kept."""
    try:
        authenticator = Authenticator.from_file(path)
    except IdentitiesFileError as error:
        logger.error("identities not reloaded, the running ones stay: %s", error)
        return
    server.reload_auth(authenticator)
    logger.info("identities reloaded from %s", path)


def _load_endpoints(path: Path | None) -> EndpointsConfig | None:
    """The endpoint configuration; a bad one stops start-up naming file, endpoint, option."""
    if path is None:
        return None
    try:
        return load_config(path)
    except ConfigError as error:
        raise click.ClickException(f"bad endpoint configuration:\n{error}") from None


async def _serve(
    server: StateServer,
    endpoints: EndpointsConfig | None = None,
    data: Path | None = None,
    auth_path: Path | None = None,
    discovery: Discovery | None = None,
    mesh: MeshSettings | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(RateLimitedLoopErrors())  # one line per 10 s per kind
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if auth_path is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_identities, server, auth_path)
    await server.start()
    for line in served_addresses(server):
        click.echo(line)
    sys.stdout.flush()  # a supervisor reading the port through a pipe sees it now
    announcing = None
    if discovery is not None:
        announcer = discovery.announcer(
            server.address,
            server.tcp_port,
            server.grpc_port,
            server.http_port if server.web is not None else None,
            web_tls=server.tls is not None,
        )
        announcing = asyncio.create_task(announcer.run())
        click.echo(f"statehub: announcing itself by ESSD to {discovery.address}:{discovery.port}")
    try:
        if endpoints is None:
            await stop.wait()
        else:
            async with (
                endpoints_running(server, endpoints, data_dir=data) as service,
                on_mesh(service, mesh),
            ):
                click.echo(f"statehub: {len(service.endpoints())} endpoints from the config")
                await stop.wait()
    finally:
        if announcing is not None:
            announcing.cancel()
        click.echo("statehub: stopping")
        await server.stop()
