"""Client-side endpoint calls, as mixins for ``AsyncClient`` and ``Client``.

``AsyncEndpointCalls`` builds on ``await self.run_command(name, **arguments)`` and
``EndpointCalls`` on ``self.run_command(...)``; mixed into a client they call the
``endpoint.*`` commands that ``attach_endpoints`` registers on the server. Importing this
module registers the endpoint error types, so a failure comes back as the same
``EndpointError`` subclass with its dripline code.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, TypedDict, cast

from statehub.core.values import JsonValue
from statehub.endpoints import return_codes as _return_codes  # noqa: F401 - registers errors


class EndpointEvent(TypedDict):
    """A logged value: when (seconds since the epoch), where, raw and calibrated."""

    time: float
    address: str
    value_raw: JsonValue
    value_cal: JsonValue


GET = "endpoint.get"
SET = "endpoint.set"
CMD = "endpoint.cmd"
LIST = "endpoint.list"
HISTORY = "endpoint.history"

Since = float | int | dt.datetime | None


def _since(since: Since) -> float | None:
    """Seconds since the epoch; a naive datetime is taken as UTC."""
    if isinstance(since, dt.datetime):
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        return since.timestamp()
    return None if since is None else float(since)


def _cmd_arguments(
    address: str, method: str, args: tuple[Any, ...], lockout_key: str | None, kwargs: Any
) -> dict[str, JsonValue]:
    return {
        "address": address,
        "method": method,
        "args": list(args),
        "kwargs": dict(kwargs),
        "lockout_key": lockout_key,
    }


class AsyncEndpointCalls:
    """Endpoint operations for an async client (one with ``async run_command``)."""

    if TYPE_CHECKING:

        async def run_command(
            self, name: str, **arguments: JsonValue
        ) -> dict[str, JsonValue] | None: ...

    async def endpoint_get(
        self, address: str, specifier: str | None = None
    ) -> dict[str, JsonValue]:
        """``{value_raw, value_cal}`` of the endpoint at ``address`` (or what ``specifier``
        names: ``"is-locked"`` gives ``{is_locked, tag}``)."""
        return await self.run_command(GET, address=address, specifier=specifier) or {}

    async def endpoint_set(
        self, address: str, value: JsonValue, *, lockout_key: str | None = None
    ) -> dict[str, JsonValue]:
        """Set the raw value; answers ``{value_raw, value_cal}`` if the endpoint has
        ``get_on_set``, else ``{}``."""
        return (
            await self.run_command(SET, address=address, value=value, lockout_key=lockout_key) or {}
        )

    async def endpoint_cmd(
        self,
        address: str,
        method: str,
        *args: JsonValue,
        lockout_key: str | None = None,
        **kwargs: JsonValue,
    ) -> dict[str, JsonValue]:
        """Run ``method`` (``lock``, ``unlock``, ``ping``, ``set_condition``...) on an
        endpoint or service with positional ``args`` and keyword ``kwargs``."""
        arguments = _cmd_arguments(address, method, args, lockout_key, kwargs)
        return await self.run_command(CMD, **arguments) or {}

    async def endpoint_lock(
        self,
        address: str,
        key: str | None = None,
        *,
        tag: str | None = None,
        lockout_key: str | None = None,
    ) -> str:
        """Lock an endpoint or service (with ``key``, or a new one); returns the key."""
        kwargs: dict[str, Any] = {"key": key, "tag": tag}
        result = await self.endpoint_cmd(address, "lock", lockout_key=lockout_key, **kwargs)
        return str(result["key"])

    async def endpoint_unlock(
        self, address: str, lockout_key: str | None = None, *, force: bool = False
    ) -> dict[str, JsonValue]:
        """``{unlocked: True}``, or ``{unlocked: False, warning}`` if it was not locked."""
        return await self.endpoint_cmd(address, "unlock", lockout_key=lockout_key, force=force)

    async def list_endpoints(self, service: str | None = None) -> list[str]:
        """The addresses of every endpoint (of one service, if given)."""
        result = await self.run_command(LIST, service=service) or {}
        return cast(list[str], result.get("endpoints", []))

    async def endpoint_history(
        self, address: str, since: Since = None, limit: int | None = 1000
    ) -> list[EndpointEvent]:
        """Logged values ``{time, address, value_raw, value_cal}``, oldest first."""
        result = (
            await self.run_command(HISTORY, address=address, since=_since(since), limit=limit) or {}
        )
        return cast(list[EndpointEvent], result.get("events", []))


class EndpointCalls:
    """Endpoint operations for a blocking client (one with ``run_command``)."""

    if TYPE_CHECKING:

        def run_command(self, name: str, **arguments: JsonValue) -> dict[str, JsonValue] | None: ...

    def endpoint_get(self, address: str, specifier: str | None = None) -> dict[str, JsonValue]:
        """See ``AsyncEndpointCalls.endpoint_get``."""
        return self.run_command(GET, address=address, specifier=specifier) or {}

    def endpoint_set(
        self, address: str, value: JsonValue, *, lockout_key: str | None = None
    ) -> dict[str, JsonValue]:
        """See ``AsyncEndpointCalls.endpoint_set``."""
        return self.run_command(SET, address=address, value=value, lockout_key=lockout_key) or {}

    def endpoint_cmd(
        self,
        address: str,
        method: str,
        *args: JsonValue,
        lockout_key: str | None = None,
        **kwargs: JsonValue,
    ) -> dict[str, JsonValue]:
        """See ``AsyncEndpointCalls.endpoint_cmd``."""
        return (
            self.run_command(CMD, **_cmd_arguments(address, method, args, lockout_key, kwargs))
            or {}
        )

    def endpoint_lock(
        self,
        address: str,
        key: str | None = None,
        *,
        tag: str | None = None,
        lockout_key: str | None = None,
    ) -> str:
        """See ``AsyncEndpointCalls.endpoint_lock``."""
        kwargs: dict[str, Any] = {"key": key, "tag": tag}
        return str(self.endpoint_cmd(address, "lock", lockout_key=lockout_key, **kwargs)["key"])

    def endpoint_unlock(
        self, address: str, lockout_key: str | None = None, *, force: bool = False
    ) -> dict[str, JsonValue]:
        """See ``AsyncEndpointCalls.endpoint_unlock``."""
        return self.endpoint_cmd(address, "unlock", lockout_key=lockout_key, force=force)

    def list_endpoints(self, service: str | None = None) -> list[str]:
        """See ``AsyncEndpointCalls.list_endpoints``."""
        return cast(list[str], (self.run_command(LIST, service=service) or {}).get("endpoints", []))

    def endpoint_history(
        self, address: str, since: Since = None, limit: int | None = 1000
    ) -> list[EndpointEvent]:
        """See ``AsyncEndpointCalls.endpoint_history``."""
        result = self.run_command(HISTORY, address=address, since=_since(since), limit=limit)
        return cast(list[EndpointEvent], (result or {}).get("events", []))
