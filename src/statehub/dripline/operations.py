"""Dripline requests as endpoint operations: which services a configuration puts on the
mesh, and what a request's routing key, headers and payload ask of ``EndpointService``.
No I/O: the mesh edge (``mesh``) moves the messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from statehub.core.values import JsonValue
from statehub.dripline import wire
from statehub.dripline.settings import MeshSettingsError
from statehub.dripline.wire import RequestHeaders
from statehub.endpoints.nodes import Endpoint, ServiceNode
from statehub.endpoints.return_codes import (
    InvalidMethodError,
    InvalidPayloadError,
    NoActionTakenError,
)
from statehub.endpoints.service import EndpointService


@dataclass(frozen=True, slots=True)
class MeshNode:
    """A dripline service on the mesh: its queue name, the node it acts on, its bindings."""

    name: str
    node: ServiceNode
    binding_keys: tuple[str, ...]


def mesh_nodes(service: EndpointService) -> list[MeshNode]:
    """The dripline services of a configuration (see the module docstring)."""
    root = service.root
    if root.name is not None:
        tops: list[ServiceNode] = [root]
    else:
        loose = [child.name for child in root.children if isinstance(child, Endpoint)]
        if loose:
            raise MeshSettingsError(
                f"endpoints {', '.join(map(repr, loose))} are under no named service: a "
                "dripline mesh routes to services, so give the configuration a top-level "
                "'name' (or put the endpoints under a provider)"
            )
        tops = [child for child in root.children if isinstance(child, ServiceNode)]
    nodes = []
    for top in tops:
        assert top.name is not None
        names = [member.name for member in top.subtree() if member.name is not None]
        keys = (*(f"{name}.#" for name in names), f"{wire.BROADCAST}.#")
        nodes.append(MeshNode(top.name, top, keys))
    return nodes


def operate(
    service: EndpointService,
    mesh_node: MeshNode,
    routing_key: str,
    headers: RequestHeaders,
    payload: JsonValue,
) -> dict[str, JsonValue]:
    """Run the endpoint operation a dripline request names, as statehub's own protocol
    runs it (``EndpointService.get/set/cmd``); its errors carry their return codes."""
    address = _address(routing_key, mesh_node)
    operation = headers.operation
    specifier = headers.specifier
    key = headers.lockout_key
    if operation == wire.OP_GET:
        return service.get(address, specifier)
    if operation == wire.OP_SET:
        if specifier is not None:
            address = f"{address}.{specifier}"
        return service.set(address, _set_value(payload), lockout_key=key)
    args, kwargs = _cmd_arguments(payload)
    if specifier is None:
        target, specifier = service.resolve(address)
        address = target.address or wire.BROADCAST
        if specifier is None:
            raise InvalidMethodError(
                f"{routing_key}: a cmd needs a method name, in the specifier "
                "header or as the routing key's last part"
            )
    return service.cmd(address, specifier, args, kwargs, lockout_key=key)


def reply_code(result: dict[str, JsonValue]) -> tuple[int, str]:
    """The return code and message of a successful operation: a ``warning`` in the
    result (``unlock`` of an unlocked endpoint) is dripline's 1, no action taken."""
    warning = result.get("warning")
    if isinstance(warning, str):
        return NoActionTakenError.code, warning
    return 0, "success"


def _address(routing_key: str, node: MeshNode) -> str:
    """The endpoint address a routing key names; ``broadcast`` means this service."""
    first, dot, rest = routing_key.partition(".")
    if first != wire.BROADCAST:
        return routing_key
    return f"{node.node.address}.{rest}" if dot else node.node.address


def _set_value(payload: JsonValue) -> JsonValue:
    if not isinstance(payload, dict) or "values" not in payload:
        raise InvalidPayloadError(f'a set takes {{"values": [value]}}, got {payload!r}')
    values = payload["values"]
    if not isinstance(values, list) or len(values) != 1:
        raise InvalidPayloadError(f'a set takes exactly one value in "values", got {values!r}')
    value: JsonValue = values[0]
    return value


def _cmd_arguments(payload: JsonValue) -> tuple[list[JsonValue], dict[str, JsonValue]]:
    """A cmd's ``{"values": [args...], name: value...}`` as positional and keyword args."""
    if payload is None:
        return [], {}
    if not isinstance(payload, dict):
        raise InvalidPayloadError(f'a cmd takes {{"values": [args...], ...}}, got {payload!r}')
    kwargs = dict(payload)
    args = kwargs.pop("values", [])
    if not isinstance(args, list):
        raise InvalidPayloadError(f'a cmd\'s "values" is a list, got {args!r}')
    return args, kwargs
