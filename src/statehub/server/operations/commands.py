"""Commands: a call needs the call right on its name; a listing shows only what may be called."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from statehub.auth import Principal, Right
from statehub.auth.context import current_principal
from statehub.core.commands import CommandRegistry

T = TypeVar("T")


def may_call(principal: Principal, name: str, op: str) -> None:
    """Check the call right on ``name`` and make ``principal`` the running task's caller
    (a command that needs an admin right asks ``current_principal``)."""
    principal.require(Right.CALL, [name], op)
    current_principal.set(principal)


async def run_command(
    commands: CommandRegistry,
    principal: Principal,
    name: str,
    arguments: dict[str, Any],
    op: str,
) -> dict[str, Any] | None:
    """Run ``name`` as ``principal``: its result, or the command's error."""
    may_call(principal, name, op)
    return await commands.run_async(name, arguments)


def callable_only(listing: Mapping[str, T], principal: Principal) -> dict[str, T]:
    """The entries of ``listing`` (by command name) that ``principal`` may call."""
    callable_names = principal.permissions.call
    return {name: entry for name, entry in listing.items() if name in callable_names}
