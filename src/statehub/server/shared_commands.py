"""Commands of every server sharing one state: a call runs where its command lives.

``SharedCommandRegistry`` is the server's ``CommandRegistry`` when its store has peers
(Redis): what is registered here is also offered to the other servers, and a call for a
command this server does not run goes to the server that does (through the store). Where
a call runs:

- a command registered here without a route runs here;
- a command with a route (``CommandRoute``, the ``endpoint.*`` commands) runs on the
  server that claimed the call's route argument (an endpoint address, or its longest
  dotted prefix that someone claimed); a call without the argument runs on every server
  offering the command if the route gathers (results merged: lists joined), else here
  (or on one offering server if this one does not);
- any other command runs on the one server offering it.

The caller's identity goes with the call, so a command checking an admin right sees the
same identity on any server; the call right itself is checked by the session, on the
server the client is connected to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from statehub.auth.context import current_principal
from statehub.auth.permissions import (
    AdminRight,
    NamePatterns,
    Permissions,
    PrefixSet,
    Principal,
)
from statehub.core.commands import CommandRegistration, CommandRegistry, CommandResult, CommandRoute
from statehub.core.values import JsonValue, copy_mapping
from statehub.endpoints import return_codes as _return_codes  # noqa: F401 - errors by type
from statehub.errors import CommandUnavailableError
from statehub.store.peers import CommandPeers, Offer

logger = logging.getLogger(__name__)


class SharedCommandRegistry(CommandRegistry):
    """The commands registered here, plus those the other servers sharing the store offer.

    ``local_only`` names commands every server has on its own (``commands/list``): never
    offered, always run here.
    """

    def __init__(
        self,
        peers: CommandPeers,
        *,
        executor: Executor | None = None,
        local_only: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(executor=executor)
        self._peers = peers
        self._local_only = local_only
        peers.serve(self._run_for_peer)

    def register(
        self,
        name: str,
        callback: Callable[..., Any],
        default_arguments: Mapping[str, Any] | None = None,
        *,
        route: CommandRoute | None = None,
    ) -> None:
        """Add a command and offer it to the other servers.

        ``ValueError`` if the name is taken here, or (without a route) offered by another
        live server, or one of ``route.values`` is claimed by another live server.
        """
        super().register(name, callback, default_arguments, route=route)
        if name in self._local_only:
            return
        registration = self.registration(name)
        assert registration is not None
        try:
            self._peers.offer(name, registration.default_arguments, route)
        except BaseException:
            super().unregister(name)
            raise

    def unregister(self, name: str) -> None:
        super().unregister(name)
        if name not in self._local_only:
            self._peers.withdraw(name)

    def list(self) -> dict[str, dict[str, JsonValue]]:
        """Every command callable here, on this server or another, with its defaults."""
        listing = {
            name: copy_mapping(offers[0].defaults) for name, offers in self._peers.offers().items()
        }
        listing.update(super().list())
        return listing

    async def run_async(
        self, name: str, arguments: Mapping[str, Any] | None = None
    ) -> CommandResult:
        arguments = dict(arguments or {})
        local = self.registration(name)
        if local is not None and local.route is None:
            return await super().run_async(name, arguments)
        target = self._target(name, arguments, local, looked_again=False)
        if target == _UNKNOWN:  # maybe offered or claimed elsewhere a moment ago: look again
            await self._peers.refresh()
            target = self._target(name, arguments, local, looked_again=True)
        if target == _GATHER:
            return await self._gather(name, arguments, local)
        if target in (_HERE, _UNKNOWN):
            return await super().run_async(name, arguments)  # here, or "no command named"
        context = _principal_to_wire(current_principal.get())
        return await self._peers.call(target, name, arguments, context)

    def _target(
        self,
        name: str,
        arguments: dict[str, Any],
        local: CommandRegistration | None,
        *,
        looked_again: bool,
    ) -> str:
        """Which server runs the call: a server id, or ``_HERE``, ``_GATHER``, ``_UNKNOWN``
        (nobody offers it, or nobody claimed its route value: read the directory again,
        unless ``looked_again``)."""
        offers = self._peers.offers().get(name, [])
        route = local.route if local is not None else _route_of(offers)
        if route is None:
            return offers[0].server if offers else _UNKNOWN
        value = arguments.get(route.argument)
        if isinstance(value, str):
            claimed_here = local.route.values if local is not None and local.route else ()
            for candidate in _dotted_prefixes(value):
                if candidate in claimed_here:
                    return _HERE
                claimant = self._peers.claimant(name, candidate)
                if claimant is not None:
                    return claimant
            if not looked_again:  # claimed elsewhere a moment ago, maybe: even if offered here
                return _UNKNOWN
        elif value is None and route.gather:
            return _GATHER
        if local is not None:
            return _HERE
        return offers[0].server if offers else _UNKNOWN

    async def _gather(
        self, name: str, arguments: dict[str, Any], local: CommandRegistration | None
    ) -> CommandResult:
        """Run on every server offering ``name``; one gone meanwhile is left out."""
        context = _principal_to_wire(current_principal.get())
        calls = [
            self._peers.call(offer.server, name, arguments, context)
            for offer in self._peers.offers().get(name, [])
        ]
        if local is not None:
            calls.insert(0, super().run_async(name, arguments))
        merged: dict[str, JsonValue] = {}
        for result in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(result, CommandUnavailableError):
                logger.info("%s: %s", name, result)
                continue
            if isinstance(result, BaseException):
                raise result
            for key, value in (result or {}).items():
                joined = merged.get(key)
                if isinstance(joined, list) and isinstance(value, list):
                    joined.extend(value)
                else:
                    merged[key] = value
        return merged

    async def _run_for_peer(
        self, name: str, arguments: dict[str, Any], context: dict[str, Any]
    ) -> CommandResult:
        """A call another server forwarded: run it here, as the identity that made it."""
        current_principal.set(_principal_from_wire(context))  # this call's task only
        return await super().run_async(name, arguments)


_HERE = "\0here"
_GATHER = "\0gather"
_UNKNOWN = "\0unknown"


def _route_of(offers: list[Offer]) -> CommandRoute | None:
    return next((offer.route for offer in offers if offer.route is not None), None)


def _dotted_prefixes(value: str) -> list[str]:
    """``a.b.c``, ``a.b``, ``a``: the longest claim wins (an address with a specifier)."""
    parts = value.split(".")
    return [".".join(parts[:end]) for end in range(len(parts), 0, -1)]


def _principal_to_wire(principal: Principal) -> dict[str, Any]:
    permissions = principal.permissions
    return {
        "name": principal.name,
        "method": principal.method,
        "roles": list(principal.roles),
        "read": list(permissions.read.prefixes),
        "write": list(permissions.write.prefixes),
        "lease": list(permissions.lease.prefixes),
        "lock": list(permissions.lock.prefixes),
        "call": list(permissions.call.patterns),
        "admin": sorted(permissions.admin),
    }


def _principal_from_wire(wire: dict[str, Any]) -> Principal:
    """The identity a forwarded call runs as; what cannot be read grants nothing."""

    def strings(field: str) -> list[str]:
        values = wire.get(field)
        return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []

    known = {right.value for right in AdminRight}
    admin = frozenset(AdminRight(value) for value in strings("admin") if value in known)
    permissions = Permissions(
        read=PrefixSet(strings("read")),
        write=PrefixSet(strings("write")),
        lease=PrefixSet(strings("lease")),
        lock=PrefixSet(strings("lock")),
        call=NamePatterns(strings("call")),
        admin=admin,
    )
    return Principal(
        str(wire.get("name", "")),
        permissions,
        tuple(strings("roles")),
        str(wire.get("method", "none")),
    )
