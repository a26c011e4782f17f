"""Client: the same calls as ``AsyncClient``, blocking, for code without an event loop.

It owns an ``AsyncClient`` and an event loop running in one background thread; each call
is submitted to that loop and waited for, so both clients share everything but this edge.
Read/write locks taken through it belong to the calling thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from statehub.client.async_client import AsyncClient, ChangeStream
from statehub.client.changes import StateChange
from statehub.client.connection import DEFAULT_PORT
from statehub.client.tls import ClientTls
from statehub.core.change import DictionaryChange
from statehub.core.events import Event
from statehub.core.values import JsonValue
from statehub.endpoints.remote import EndpointCalls

T = TypeVar("T")


class Client(EndpointCalls):
    """A blocking statehub client; connects on construction (``ConnectionLost`` if it can't).

    ``with Client(address, port) as client: client.set("a", 1)``. Event callbacks
    (``connection_lost``, ``reconnected``, ``leases_lost``, ``locks_lost``) run in the
    client's background thread.
    """

    def __init__(
        self,
        address: str = "localhost",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        credential: str | None = None,
        tls: ClientTls | bool | None = None,
        name: str | None = None,
        connect_timeout: float = 5.0,
        reconnect: bool = True,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="statehub-client", daemon=True
        )
        self._thread.start()
        self._owners = threading.local()
        self._closed = False
        self.aio = AsyncClient(
            address,
            port,
            token=token,
            credential=credential,
            tls=tls,
            name=name,
            connect_timeout=connect_timeout,
            reconnect=reconnect,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        try:
            self._run(self.aio.connect())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C while waiting: don't leave the call running
            raise

    def _call_soon(self, function: Any, *args: Any) -> None:
        self._loop.call_soon_threadsafe(function, *args)

    # -- connection ----------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.aio.address

    @property
    def port(self) -> int:
        return self.aio.port

    @property
    def connected(self) -> bool:
        return self.aio.connected

    @property
    def token(self) -> str | None:
        return self.aio.token

    @property
    def connection_lost(self) -> Event:
        return self.aio.connection_lost

    @property
    def reconnected(self) -> Event:
        return self.aio.reconnected

    @property
    def leases_lost(self) -> Event:
        return self.aio.leases_lost

    @property
    def locks_lost(self) -> Event:
        return self.aio.locks_lost

    def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until (re)connected; ``ConnectionLost`` if ``timeout`` s pass first."""
        self._run(self.aio.wait_connected(timeout))

    def close(self) -> None:
        """End the session and stop the background thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self.aio.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- Pythonic state calls ------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        return self._run(self.aio.get(key, default))

    def get_all(self) -> dict[str, JsonValue]:
        return self._run(self.aio.get_all())

    def set(self, key: str, value: Any) -> int:
        return self._run(self.aio.set(key, value))

    def remove(self, key: str) -> int:
        return self._run(self.aio.remove(key))

    def update(
        self,
        updates: Mapping[str, Any] | None = None,
        removals: Iterable[str] | None = None,
    ) -> int:
        return self._run(self.aio.update(updates, removals))

    def subscribe(self, interval: float = 0, prefix: str = "") -> Iterator[StateChange]:
        """Yield coalesced changes (first a snapshot) until the generator is closed."""
        stream = self.aio.subscribe(interval, prefix)
        return self._iterate(stream)

    def _iterate(self, stream: ChangeStream) -> Iterator[StateChange]:
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                self._call_soon(stream.close)

    # -- NanoVer's calls -----------------------------------------------------------

    def subscribe_all_state_updates(self, interval: float = 0) -> None:
        self._run(self.aio.subscribe_all_state_updates(interval))

    def copy_state(self) -> dict[str, JsonValue]:
        return self.aio.copy_state()

    @contextmanager
    def lock_state(self) -> Iterator[Mapping[str, JsonValue]]:
        with self.aio.lock_state() as state:
            yield state

    def attempt_update_state(self, change: DictionaryChange) -> bool:
        return self._run(self.aio.attempt_update_state(change))

    def attempt_update_locks(self, lock_updates: Mapping[str, float | None]) -> bool:
        return self._run(self.aio.attempt_update_locks(lock_updates))

    def list_leases(self) -> list[tuple[str, bool, float | None]]:
        return self._run(self.aio.list_leases())

    def run_command(self, name: str, **arguments: Any) -> dict[str, Any] | None:
        return self._run(self.aio.run_command(name, **arguments))

    @property
    def available_commands(self) -> dict[str, dict[str, Any]]:
        """The commands on the server (a property, as in NanoVer's client)."""
        return self._run(self.aio.available_commands())

    # -- read/write locks ----------------------------------------------------------

    @contextmanager
    def get_lock(
        self, key: str, *, exclusive: bool = True, timeout: float | None = None
    ) -> Iterator[None]:
        """Hold the read/write lock on ``key`` for the ``with`` block (owner: this thread)."""
        held = self._run(self.aio.acquire_lock(key, self._thread_owner(), exclusive, timeout))
        try:
            yield
        finally:
            self._run(self.aio.release_lock(held))

    def test_lock(self, key: str, *, exclusive: bool = True) -> bool:
        return self._run(self.aio.test_lock(key, exclusive=exclusive))

    def _thread_owner(self) -> str:
        owner: str | None = getattr(self._owners, "name", None)
        if owner is None:
            owner = self.aio.new_owner("thread")
            self._owners.name = owner
        return owner
