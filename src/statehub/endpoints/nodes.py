"""The nodes of an endpoint configuration: services and the endpoints under them.

An ``Endpoint`` is one key of the shared state; a ``ServiceNode`` groups endpoints (and
other services) under an address. Methods named ``cmd_<name>`` are what ``cmd <name>``
runs; modules named in the configuration map to these classes (``register_*_module``).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from statehub.core.values import JsonValue
from statehub.endpoints.calibration import Calibration
from statehub.endpoints.config import ENDPOINT_MODULES, SERVICE_MODULES, EndpointConfig
from statehub.endpoints.lockout import Lockout
from statehub.endpoints.logging_rules import LoggedValue
from statehub.endpoints.return_codes import (
    InvalidPayloadError,
    InvalidRoutingKeyError,
    InvalidSpecifierError,
    InvalidValueError,
)
from statehub.store.state_dictionary import StateDictionary

#: The address that reaches the top of the configuration (every service), as dripline's
#: ``broadcast`` routing key does.
BROADCAST = "broadcast"

#: Methods that change nothing, so lockout does not apply (as for get).
READ_ONLY_METHODS = frozenset({"ping", "is_locked", "list_endpoints"})

#: The specifiers ``get`` answers on every endpoint, besides the configuration options.
LOCK_SPECIFIERS = ("is-locked", "is_locked")


class NodeHost(Protocol):
    """What a node needs of the service holding it (``EndpointService``, which builds the
    nodes and so imports this module): the state to read, and the one path writes take."""

    state: StateDictionary

    def write(self, updates: dict[str, JsonValue]) -> None: ...


class Node:
    """A service or an endpoint: an address, a parent and a lockout.

    ``cmd`` methods are the methods named ``cmd_<name>`` (``cmd_set_condition`` answers
    ``cmd set_condition`` and ``cmd set-condition``); subclasses add their own. Each returns
    a dict or None.
    """

    kind: ClassVar[str] = "node"

    def __init__(self, hub: NodeHost, address: str, name: str | None) -> None:
        self.hub = hub
        self.address = address
        self.name = name
        self.parent: ServiceNode | None = None
        self.lockout = Lockout()

    def subtree(self) -> list[Node]:
        """This node and everything under it."""
        return [self]

    def cmd_ping(self) -> dict[str, JsonValue]:
        """Always answers, locked or not."""
        return {}

    def cmd_set_condition(self, n: int) -> dict[str, JsonValue]:
        """A hook for a numbered condition; by default it does nothing and succeeds."""
        if type(n) is not int:
            raise InvalidPayloadError(f"{self.address}: set_condition takes an int, got {n!r}")
        return {}

    def cmd_is_locked(self) -> dict[str, JsonValue]:
        return dict(self.lockout.status())

    def get_specifier(self, specifier: str) -> dict[str, JsonValue]:
        if specifier in LOCK_SPECIFIERS:
            return dict(self.lockout.status())
        raise InvalidSpecifierError(f"{self.address} has no {specifier!r} to get")


class ServiceNode(Node):
    """A service or provider: it holds endpoints and further providers."""

    kind = "service"

    def __init__(self, hub: NodeHost, address: str, name: str | None) -> None:
        super().__init__(hub, address, name)
        self.children: list[Node] = []

    def subtree(self) -> list[Node]:
        nodes: list[Node] = [self]
        for child in self.children:
            nodes.extend(child.subtree())
        return nodes

    def endpoints(self) -> list[Endpoint]:
        return [node for node in self.subtree() if isinstance(node, Endpoint)]

    def cmd_list_endpoints(self) -> dict[str, JsonValue]:
        return {"endpoints": [endpoint.address for endpoint in self.endpoints()]}

    def get_specifier(self, specifier: str) -> dict[str, JsonValue]:
        if specifier in ("endpoints", "list_endpoints", "list-endpoints"):
            return self.cmd_list_endpoints()
        if specifier in LOCK_SPECIFIERS:
            return super().get_specifier(specifier)
        # Under a service, an unknown last part is more likely a mistyped endpoint name.
        address = f"{self.address}.{specifier}" if self.address else specifier
        raise InvalidRoutingKeyError(f"no endpoint or service at {address!r}")


class Endpoint(Node):
    """A key of the store (dragonfly's ``kv_store_key``): get, set, calibration, logging.

    Subclass it for endpoints backed by something else (override ``on_get``/``on_set``)
    and register the class with ``register_endpoint_module``.
    """

    kind = "endpoint"

    def __init__(self, hub: NodeHost, address: str, config: EndpointConfig) -> None:
        super().__init__(hub, address, config.name)
        self.config = config
        self.calibration: Calibration | None = config.compiled_calibration
        self.rules = config.logging_rules
        self.event_key = f"{config.alert_routing_key}.{address}"
        self.last_logged: LoggedValue | None = None

    def on_get(self) -> JsonValue:
        """The raw value (the state's value at this endpoint's address)."""
        return self.hub.state.get(self.address)

    def on_set(self, value: JsonValue) -> None:
        """Store a new raw value."""
        self.hub.write({self.address: value})

    def calibrate(self, raw: JsonValue) -> JsonValue:
        """The calibrated value (the raw value itself without a calibration)."""
        if self.calibration is None:
            return raw
        try:
            return self.calibration(raw)
        except InvalidValueError as error:
            raise InvalidValueError(f"{self.address}: {error.reason}") from None

    def reading(self) -> dict[str, JsonValue]:
        raw = self.on_get()
        return {"value_raw": raw, "value_cal": self.calibrate(raw)}

    def get_specifier(self, specifier: str) -> dict[str, JsonValue]:
        if specifier in ("value_raw", "value_cal"):
            return {specifier: self.reading()[specifier]}
        option = specifier.replace("-", "_")
        if option in type(self.config).model_fields and option != "calibration":
            value: JsonValue = getattr(self.config, option)
            return {"value": value}
        if option == "calibration":
            return {"value": None if self.calibration is None else self.calibration.describe()}
        if option in ("schedule_interval",):
            return {"value": self.config.log_interval}
        return super().get_specifier(specifier)


#: Module name -> class; ``register_endpoint_module`` / ``register_service_module`` add.
ENDPOINT_CLASSES: dict[str, type[Endpoint]] = {name: Endpoint for name in ENDPOINT_MODULES}
SERVICE_CLASSES: dict[str, type[ServiceNode]] = {name: ServiceNode for name in SERVICE_MODULES}


def register_endpoint_module(name: str, cls: type[Endpoint]) -> None:
    """Let configurations use ``module: <name>`` for endpoints of class ``cls``."""
    if name in ENDPOINT_CLASSES:
        raise ValueError(f"endpoint module {name!r} is already registered")
    if not (isinstance(cls, type) and issubclass(cls, Endpoint)):
        raise TypeError(f"endpoint module {name!r}: {cls!r} is not an Endpoint subclass")
    ENDPOINT_CLASSES[name] = cls
    ENDPOINT_MODULES.add(name)


def register_service_module(name: str, cls: type[ServiceNode]) -> None:
    """Let configurations use ``module: <name>`` for services or providers of class ``cls``
    (override ``cmd_set_condition``, add ``cmd_<name>`` methods)."""
    if name in SERVICE_CLASSES:
        raise ValueError(f"service module {name!r} is already registered")
    if not (isinstance(cls, type) and issubclass(cls, ServiceNode)):
        raise TypeError(f"service module {name!r}: {cls!r} is not a ServiceNode subclass")
    SERVICE_CLASSES[name] = cls
    SERVICE_MODULES.add(name)
