"""``statehub serve``: run a StateServer until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import cast

import click

from statehub.core.rwlock import LockTable
from statehub.core.state_dictionary import StateDictionary
from statehub.endpoints.attach import endpoints_running
from statehub.endpoints.config import ConfigError, EndpointsConfig, load_config
from statehub.server.state_server import (
    DEFAULT_ADDRESS,
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    StateServer,
)
from statehub.store.base import Store
from statehub.store.errors import DataFileError, StoreUnavailableError
from statehub.store.sqlite import DURABILITY_MODES, Durability, SQLiteStore


@click.command()
@click.option(
    "--host",
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="Address to listen on (0.0.0.0 or :: to serve other machines).",
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (printed at start).",
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
    help="Seconds between keepalive pings to each client.",
)
@click.option(
    "--keepalive-timeout",
    default=DEFAULT_KEEPALIVE_TIMEOUT,
    show_default=True,
    type=click.FloatRange(0, 86400, min_open=True, max_open=True),
    help="Seconds without a ping answer after which a client is dropped "
    "(its leases and locks released).",
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
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Serve the dripline-style endpoints of this YAML file (checked before anything "
    "starts; logged values go to endpoint-events.sqlite3 in --data, else memory).",
)
@click.option("--verbose", "-v", is_flag=True, help="Log every session's start and end.")
def serve(
    host: str,
    port: int,
    interval: float,
    max_message_bytes: int,
    keepalive: float,
    keepalive_timeout: float,
    data: Path | None,
    durability: str | None,
    store_url: str | None,
    replicas: int,
    config_path: Path | None,
    verbose: bool,
) -> None:
    """Start a statehub server (session protocol and NanoVer gRPC services on one port).

    Runs until Ctrl-C or SIGTERM, then ends every session cleanly.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    endpoints = _load_endpoints(config_path)
    store: Store | None
    locks: LockTable | None = None
    if store_url is not None:
        if data is not None or durability is not None:
            raise click.UsageError("--store and --data/--durability exclude each other")
        store, locks = _open_redis_store(store_url, replicas)
    else:
        if replicas:
            raise click.UsageError("--replicas needs --store (Redis replicas)")
        store = _open_store(data, durability)
    server = StateServer(
        state=StateDictionary(store=store) if store is not None else None,
        locks=locks,
        address=host,
        port=port,
        max_message_bytes=max_message_bytes,
        keepalive_time=keepalive,
        keepalive_timeout=keepalive_timeout,
        min_interval=interval,
    )
    try:
        asyncio.run(_serve(server, endpoints, data))
    except OSError as error:
        raise click.ClickException(str(error.strerror or error)) from None
    finally:
        if store is not None:
            store.close()  # writes what is queued; the next start keeps the revision exactly


def _open_store(data: Path | None, durability: str | None) -> SQLiteStore | None:
    """The SQLite store in ``data`` (None: state in memory); a bad data file stops here."""
    if data is None:
        if durability is not None:
            raise click.UsageError("--durability needs --data (without it nothing is on disk)")
        return None
    try:
        return SQLiteStore(data, durability=cast(Durability, durability or "disk"))
    except DataFileError as error:
        raise click.ClickException(str(error)) from None


def _open_redis_store(url: str, replicas: int) -> tuple[Store, LockTable]:
    """The Redis store at ``url`` and its shared locks; a bad URL or no Redis stops here."""
    try:
        from statehub.store.redis import RedisStore
    except ImportError:
        raise click.ClickException(
            "--store needs the redis package: pip install 'statehub[redis]'"
        ) from None
    try:
        store = RedisStore(url, replicas=replicas)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--store") from None
    except StoreUnavailableError as error:
        raise click.ClickException(str(error)) from None
    return store, store.lock_table()


def _load_endpoints(path: Path | None) -> EndpointsConfig | None:
    """The endpoint configuration; a bad one stops start-up naming file, endpoint, option."""
    if path is None:
        return None
    try:
        return load_config(path)
    except ConfigError as error:
        raise click.ClickException(f"bad endpoint configuration:\n{error}") from None


async def _serve(
    server: StateServer, endpoints: EndpointsConfig | None = None, data: Path | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    click.echo(f"statehub serving on {server.address}:{server.port} (Ctrl-C to stop)")
    sys.stdout.flush()  # a supervisor reading the port through a pipe sees it now
    try:
        if endpoints is None:
            await stop.wait()
        else:
            async with endpoints_running(server, endpoints, data_dir=data) as service:
                click.echo(f"statehub: {len(service.endpoints())} endpoints from the config")
                await stop.wait()
    finally:
        click.echo("statehub: stopping")
        await server.stop()
