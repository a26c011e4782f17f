"""The endpoint service: dripline-style endpoints living in a ``StateDictionary``.

Each endpoint is the key of the shared state at its address (``somenode.kv.foo``) holding
its raw value, so every client and subscription sees it like any other key. The service
holds a lease that never expires on its keys, under its own access token, so a plain
``set`` from a client gets ``ResourceLockedError`` and cannot bypass lockout or
calibration; endpoint operations go through ``get``/``set``/``cmd`` here (over the
network: the ``endpoint.*`` commands that ``attach.attach_endpoints`` registers).

Logged values are events: appended to the ``EventLog`` table and published as the key
``<alert_routing_key>.<address>`` (``sensor_value.somenode.kv.foo`` by default) holding
``{value_raw, value_cal, time}``, so clients watch them with a prefix subscription.

Scheduled logging runs as one asyncio task (``start_scheduler``) on the server's loop;
what is due and what gets logged is decided by ``run_scheduled(now)``, which tests drive
with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from statehub.auth.context import require_admin
from statehub.auth.permissions import AdminRight
from statehub.core.change import DictionaryChange
from statehub.core.commands import CommandRoute
from statehub.core.values import JsonValue, checked_copy
from statehub.endpoints.config import (
    EndpointsConfig,
    ServiceConfig,
)
from statehub.endpoints.event_log import EventLog, LoggedEvent
from statehub.endpoints.lockout import canonical_key, new_key
from statehub.endpoints.logging_rules import LoggedValue, LogSchedule, log_reason
from statehub.endpoints.nodes import (
    BROADCAST,
    ENDPOINT_CLASSES,
    READ_ONLY_METHODS,
    SERVICE_CLASSES,
    Endpoint,
    Node,
    ServiceNode,
)
from statehub.endpoints.return_codes import (
    AccessDeniedError,
    InvalidMethodError,
    InvalidPayloadError,
    InvalidRoutingKeyError,
    InvalidSpecifierError,
    InvalidValueError,
    UnhandledExceptionError,
)
from statehub.errors import StatehubError
from statehub.store.state_dictionary import StateDictionary

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
LogListener = Callable[[Endpoint, LoggedEvent], None]


class EndpointService:
    """The endpoints of one configuration, served from ``state``.

    Creating it leases every endpoint key and event key (no expiry, own token) and writes
    each endpoint's ``initial_value`` in one atomic change, unless the key already holds a
    value (a durable store kept it across a restart). ``clock`` (monotonic) drives the
    logging schedule, ``wall_clock`` stamps events.
    """

    def __init__(
        self,
        state: StateDictionary,
        config: EndpointsConfig,
        *,
        event_log: EventLog | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.state = state
        self.config = config
        self.event_log = event_log if event_log is not None else EventLog()
        self.clock = clock
        self.wall_clock = wall_clock
        self.token = f"statehub-endpoints:{uuid.uuid4()}"
        self._lock = threading.RLock()
        self._nodes: dict[str, Node] = {}
        self._names: dict[str, str] = {}
        self.root = self._build(config)
        self._schedule = LogSchedule()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._last_failure: dict[str, str] = {}
        self._close_hooks: list[Callable[[], None]] = []
        self._log_listeners: list[LogListener] = []
        self._claim_keys()
        now = clock()
        for endpoint in self.endpoints():
            if endpoint.rules.log_interval is not None:
                self._schedule.add(endpoint.address, endpoint.rules.log_interval, now)

    # -- construction -------------------------------------------------------------------

    def _build(self, config: EndpointsConfig) -> ServiceNode:
        root_class = SERVICE_CLASSES[config.module]
        root = root_class(self, config.name or "", config.name)
        if config.name is not None:
            self._add(root)
        self._build_children(root, config)
        return root

    def _build_children(self, node: ServiceNode, config: ServiceConfig) -> None:
        prefix = f"{node.address}." if node.address else ""
        for endpoint_config in config.endpoints:
            endpoint_class = ENDPOINT_CLASSES[endpoint_config.module]
            endpoint = endpoint_class(self, prefix + endpoint_config.name, endpoint_config)
            endpoint.parent = node
            node.children.append(endpoint)
            self._add(endpoint)
        for provider_config in config.providers:
            provider_class = SERVICE_CLASSES[provider_config.module]
            provider = provider_class(self, prefix + provider_config.name, provider_config.name)
            provider.parent = node
            node.children.append(provider)
            self._add(provider)
            self._build_children(provider, provider_config)

    def _add(self, node: Node) -> None:
        self._nodes[node.address] = node
        if node.name is not None:
            self._names[node.name] = node.address

    def _claim_keys(self) -> None:
        endpoints = self.endpoints()
        keys = [endpoint.address for endpoint in endpoints]
        keys += [endpoint.event_key for endpoint in endpoints]
        self.state.update_locks(self.token, acquire=dict.fromkeys(keys))
        try:
            with self.state.lock_content() as content:
                initial = {
                    endpoint.address: endpoint.config.initial_value
                    for endpoint in endpoints
                    if endpoint.address not in content
                }
            self.write(initial)
        except BaseException:
            self.state.update_locks(self.token, release=keys)
            raise

    # -- lookup -------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return self.root.endpoints()

    def node(self, address: str) -> Node:
        """The service or endpoint at a full address, a bare name, or ``broadcast``."""
        node, specifier = self.resolve(address)
        if specifier is not None:
            raise InvalidRoutingKeyError(f"no endpoint or service at {address!r}")
        return node

    def endpoint(self, address: str) -> Endpoint:
        node = self.node(address)
        if not isinstance(node, Endpoint):
            raise InvalidMethodError(f"{node.address or BROADCAST} is a service, not an endpoint")
        return node

    def resolve(self, address: str) -> tuple[Node, str | None]:
        """``(node, specifier)``: ``"somenode.kv.foo.is-locked"`` gives foo and
        ``"is-locked"``. ``InvalidRoutingKeyError`` (102) if nothing matches."""
        if not isinstance(address, str):
            raise InvalidPayloadError(f"an address is a str, got {type(address).__name__}")
        node = self._lookup(address)
        if node is not None:
            return node, None
        prefix, dot, specifier = address.rpartition(".")
        if dot:
            node = self._lookup(prefix)
            if node is not None:
                return node, specifier
        raise InvalidRoutingKeyError(f"no endpoint or service at {address!r}")

    def _lookup(self, address: str) -> Node | None:
        if address in self._nodes:
            return self._nodes[address]
        if address in self._names:
            return self._nodes[self._names[address]]
        if address == BROADCAST:
            return self.root
        return None

    # -- operations ---------------------------------------------------------------------

    def get(self, address: str, specifier: str | None = None) -> dict[str, JsonValue]:
        """``{value_raw, value_cal}``, or what ``specifier`` names (``is-locked`` gives
        ``{is_locked, tag}``, an option name gives ``{value}``). Allowed while locked."""
        node, implied = self.resolve(address)
        specifier = _optional_str(specifier, "specifier") or implied
        with self._lock:
            if specifier is not None:
                return node.get_specifier(specifier)
            if isinstance(node, ServiceNode):
                return node.cmd_list_endpoints()
            assert isinstance(node, Endpoint)
            return node.reading()

    def set(
        self, address: str, value: JsonValue, lockout_key: str | None = None
    ) -> dict[str, JsonValue]:
        """Store a raw value; answers a fresh get with ``get_on_set``, else ``{}``.

        A value whose calibration fails is refused (304) and nothing is stored.
        """
        node, specifier = self.resolve(address)
        if specifier is not None:
            raise InvalidSpecifierError(
                f"{node.address}: set takes no specifier (got {specifier!r})"
            )
        if not isinstance(node, Endpoint):
            raise InvalidMethodError(f"{node.address or BROADCAST} is a service: it has no value")
        key = _key_or_none(lockout_key)
        try:
            value = checked_copy(value, node.address)
        except TypeError as error:
            raise InvalidValueError(str(error)) from None
        with self._lock:
            node.lockout.check(key, node.address, "set")
            value_cal = node.calibrate(value)
            node.on_set(value)
            if node.config.log_on_set:
                self._log(node, value, value_cal, self.clock())
            if node.config.get_on_set:
                return node.reading()
        return {}

    def cmd(
        self,
        address: str,
        method: str,
        args: list[JsonValue] | None = None,
        kwargs: dict[str, JsonValue] | None = None,
        lockout_key: str | None = None,
    ) -> dict[str, JsonValue]:
        """Run a named method: ``lock``, ``unlock``, ``ping``, ``is-locked``,
        ``set_condition``, ``list_endpoints`` (services), and whatever ``cmd_<name>``
        methods a module adds. While locked, all but ping, is-locked and list_endpoints
        need the key. A method's own unexpected exception is a 999 unhandled exception."""
        node = self.node(address)
        if not isinstance(method, str) or not method:
            raise InvalidPayloadError(f"a method name is a non-empty str, got {method!r}")
        if args is not None and not isinstance(args, list):
            raise InvalidPayloadError(f"args is a list, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise InvalidPayloadError(f"kwargs is a dict, got {type(kwargs).__name__}")
        positional = list(args or ())
        named = dict(kwargs or {})
        name = method.replace("-", "_")
        key = _key_or_none(lockout_key)
        with self._lock:
            if name == "lock":
                return self._call(node, self._lock_node, node, key, positional, named)
            if name == "unlock":
                return self._call(node, self._unlock_node, node, key, positional, named)
            handler = getattr(node, f"cmd_{name}", None)
            if handler is None or not callable(handler):
                known = sorted(
                    attribute.removeprefix("cmd_").replace("_", "-")
                    for attribute in dir(node)
                    if attribute.startswith("cmd_")
                )
                raise InvalidMethodError(
                    f"{node.address or BROADCAST} has no method {method!r} "
                    f"(it has: lock, unlock, {', '.join(known)})"
                )
            if name not in READ_ONLY_METHODS:
                node.lockout.check(key, node.address or BROADCAST, f"cmd {method}")
            result = self._call(node, handler, None, None, positional, named)
        return result

    def _call(
        self,
        node: Node,
        handler: Callable[..., Any],
        target: Node | None,
        key: str | None,
        args: list[JsonValue],
        kwargs: dict[str, JsonValue],
    ) -> dict[str, JsonValue]:
        leading = [] if target is None else [target, key]
        try:
            inspect.signature(handler).bind(*leading, *args, **kwargs)
        except TypeError as error:
            raise InvalidPayloadError(f"{node.address or BROADCAST}: {error}") from None
        try:
            result = handler(*leading, *args, **kwargs)
        except StatehubError:
            raise
        except Exception as error:
            raise UnhandledExceptionError(
                f"{node.address or BROADCAST}: {type(error).__name__}: {error}"
            ) from error
        if result is None:
            return {}
        if not isinstance(result, dict):
            raise InvalidValueError(
                f"{node.address}: a method answered {type(result).__name__}, not a dict"
            )
        return result

    def _lock_node(
        self, node: Node, lockout_key: str | None, key: str | None = None, tag: str | None = None
    ) -> dict[str, JsonValue]:
        """Lock ``node`` and everything under it with ``key`` (made up if not given).

        Refused (307) if any of them is locked with a key the request does not carry.
        """
        where = node.address or BROADCAST
        new = canonical_key(key) if key is not None else (lockout_key or new_key())
        if tag is not None and not isinstance(tag, str):
            raise InvalidPayloadError(f"{where}: a lock tag is a str, got {tag!r}")
        for member in node.subtree():
            current = member.lockout.key
            if current is not None and current != new and current != lockout_key:
                raise AccessDeniedError(
                    f"{member.address or BROADCAST} is locked with another key: cannot lock {where}"
                )
        for member in node.subtree():
            member.lockout.lock(new, tag)
        logger.info("locked %s (tag %r)", where, tag)
        return {"key": new}

    def _unlock_node(
        self, node: Node, lockout_key: str | None, force: bool = False
    ) -> dict[str, JsonValue]:
        """Unlock ``node`` and what under it holds the same key (everything with ``force``).

        Not locked: a warning, no error. Wrong or missing key without force: 307.
        """
        where = node.address or BROADCAST
        if type(force) is not bool:
            raise InvalidPayloadError(f"{where}: force is true or false, got {force!r}")
        if force:
            require_admin(AdminRight.FORCE_UNLOCK, f"force unlock of {where}")
        held = node.lockout.key
        if held is None and not force:
            return {"unlocked": False, "warning": f"{where} is already unlocked"}
        if not force and lockout_key != held:
            node.lockout.check(lockout_key, where, "unlock")
        released = 0
        for member in node.subtree():
            if member.lockout.key is not None and (force or member.lockout.key == held):
                member.lockout.unlock()
                released += 1
        if released == 0:
            return {"unlocked": False, "warning": f"{where} is already unlocked"}
        logger.info("unlocked %s%s", where, " (forced)" if force else "")
        return {"unlocked": True}

    def list_endpoints(self, service: str | None = None) -> dict[str, JsonValue]:
        """``{endpoints: [address, ...]}``, of one service if ``service`` is given."""
        if service is None:
            return self.root.cmd_list_endpoints()
        node = self.node(service)
        if isinstance(node, ServiceNode):
            return node.cmd_list_endpoints()
        return {"endpoints": [node.address]}

    def history(
        self, address: str, since: float | None = None, limit: int | None = 1000
    ) -> dict[str, JsonValue]:
        """``{address, events: [{time, address, value_raw, value_cal}, ...]}``, oldest first
        (the newest ``limit`` of them, at or after ``since`` seconds since the epoch)."""
        endpoint = self.endpoint(address)
        if since is not None and type(since) not in (int, float):
            raise InvalidPayloadError(f"since is seconds since the epoch, got {since!r}")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidPayloadError(f"limit is an int >= 0 or None, got {limit!r}")
        events = self.event_log.history(endpoint.address, since, limit)
        return {"address": endpoint.address, "events": [event.to_dict() for event in events]}

    # -- logging ------------------------------------------------------------------------

    def write(self, updates: dict[str, JsonValue]) -> None:
        """Commit ``updates`` under the service's token; return once they are durable
        (readers see a change only then, this service's own reads included)."""
        if updates:
            self.state.wait_durable(self.state.update_state(self.token, DictionaryChange(updates)))

    def _log(self, endpoint: Endpoint, raw: JsonValue, cal: JsonValue, now: float) -> LoggedEvent:
        event = LoggedEvent(self.wall_clock(), endpoint.address, raw, cal)
        self.event_log.append(event)
        self.write({endpoint.event_key: {"value_raw": raw, "value_cal": cal, "time": event.time}})
        endpoint.last_logged = LoggedValue(cal, now)
        for listener in list(self._log_listeners):
            try:
                listener(endpoint, event)
            except Exception:
                logger.exception("a listener of logged values failed on %s", endpoint.address)
        return event

    def on_logged(self, listener: LogListener) -> Callable[[], None]:
        """Call ``listener(endpoint, event)`` after each logged value (from whichever
        thread logged it, holding the service's lock: hand the work off, don't block).
        Returns a function that removes the listener."""
        self._log_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._log_listeners.remove(listener)

        return remove

    def run_scheduled(self, now: float | None = None) -> list[LoggedEvent]:
        """Read every endpoint due at ``now`` and log those whose value a rule picks.

        Never raises for one endpoint's trouble (a failed calibration, a bad value): it is
        reported through ``logging`` once per distinct failure and the others go on.
        """
        now = self.clock() if now is None else now
        logged: list[LoggedEvent] = []
        for address in self._schedule.pop_due(now):
            endpoint = self._nodes[address]
            assert isinstance(endpoint, Endpoint)
            try:
                with self._lock:
                    reading = endpoint.reading()
                    reason = log_reason(
                        endpoint.rules, endpoint.last_logged, reading["value_cal"], now
                    )
                    if reason is not None:
                        logged.append(
                            self._log(endpoint, reading["value_raw"], reading["value_cal"], now)
                        )
                self._last_failure.pop(address, None)
            except Exception as error:
                message = f"{type(error).__name__}: {error}"
                if self._last_failure.get(address) != message:
                    self._last_failure[address] = message
                    logger.warning("scheduled logging of %s failed: %s", address, message)
        return logged

    def next_due(self) -> float | None:
        """When (on ``clock``) the next endpoint is due, or None if none is scheduled."""
        return self._schedule.next_due()

    def start_scheduler(self) -> asyncio.Task[None]:
        """Start scheduled logging as a task of the running loop (call from inside it)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("the endpoint scheduler is already running")
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run_scheduler(self._wake), name="statehub-endpoint-scheduler"
        )
        return self._task

    async def stop_scheduler(self) -> None:
        """Stop the scheduler task and wait for it to end."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run_scheduler(self, wake: asyncio.Event) -> None:
        while not self._stopping:
            # One worker-thread hop per tick (not a thread per endpoint): the readings are
            # quick, but appending to an event log on disk should not hold up the loop.
            await asyncio.to_thread(self.run_scheduled)
            due = self._schedule.next_due()
            delay = None if due is None else max(0.0, due - self.clock())
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when the service closes (what attached it undoes itself)."""
        self._close_hooks.append(hook)

    def close(self) -> None:
        """Unregister the commands, release the leases, close the event log (stop the
        scheduler first). The endpoint keys stay in the state as plain keys."""
        hooks, self._close_hooks = self._close_hooks, []
        for hook in hooks:
            hook()
        self.state.release_owner(self.token)
        self.event_log.close()

    # -- network ------------------------------------------------------------------------

    def command_routes(self) -> dict[str, CommandRoute]:
        """How each ``endpoint.*`` command finds the server serving an address, when
        several servers share one state: each claims its full addresses (bare names and
        ``broadcast`` stay with the server they are called on)."""
        addresses = frozenset(address for address in self._nodes if address)
        by_address = CommandRoute("address", addresses)
        return {
            "endpoint.get": by_address,
            "endpoint.set": by_address,
            "endpoint.cmd": by_address,
            "endpoint.list": CommandRoute("service", addresses, gather=True),
            "endpoint.history": by_address,
        }

    def commands(self) -> dict[str, Callable[..., dict[str, JsonValue]]]:
        """The ``endpoint.*`` commands by name, for ``register_command``."""
        return {
            "endpoint.get": self.get,
            "endpoint.set": self.set,
            "endpoint.cmd": self.cmd,
            "endpoint.list": self.list_endpoints,
            "endpoint.history": self.history,
        }


def _optional_str(value: object, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidPayloadError(f"{what} is a str, got {type(value).__name__}")


def _key_or_none(lockout_key: object) -> str | None:
    return None if lockout_key is None else canonical_key(lockout_key)
