"""What a store shared by several servers offers for commands: a directory and calls.

An in-process store (memory, SQLite) has no peers: ``Store.command_peers()`` is None and
the server's commands are its own. A shared store (Redis) keeps a directory of which
server offers which command (and which server claimed which value of a routed command's
argument, such as an endpoint address), and carries a call to the server that runs it.
The server layer (``server/shared_commands.py``) decides where each call runs; the store
only keeps the directory and moves calls and their answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from statehub.core.commands import CommandResult, CommandRoute
from statehub.core.values import JsonValue

#: Runs a call another server forwarded here: (name, arguments, context) -> result.
PeerRunner = Callable[[str, dict[str, Any], dict[str, Any]], Awaitable[CommandResult]]


@dataclass(frozen=True, slots=True)
class Offer:
    """A command as another server offers it: its default arguments and its route."""

    server: str
    defaults: dict[str, JsonValue]
    route: CommandRoute | None


class CommandPeers(Protocol):
    """The other servers sharing a store, as far as commands go."""

    @property
    def server_id(self) -> str:
        """This server's id (as the directory names it)."""

    def serve(self, runner: PeerRunner) -> None:
        """Run the calls other servers forward here with ``runner``."""

    def offer(
        self, name: str, defaults: Mapping[str, JsonValue], route: CommandRoute | None
    ) -> None:
        """Publish a command this server registered.

        ``ValueError`` naming the other server if a live one already offers ``name``
        without a route, or claimed one of ``route.values`` for it.
        """

    def withdraw(self, name: str) -> None:
        """This server no longer offers ``name`` (nor claims its route values)."""

    def offers(self) -> dict[str, list[Offer]]:
        """The commands other live servers offer, by name (as last read; see ``refresh``)."""

    def claimant(self, name: str, value: str) -> str | None:
        """The other server that claimed ``value`` of routed command ``name``, if any."""

    async def refresh(self) -> None:
        """Read the directory again now (a call found nothing where it looked)."""

    async def call(
        self, server: str, name: str, arguments: dict[str, Any], context: dict[str, Any]
    ) -> CommandResult:
        """Run ``name`` on ``server`` and return its result, or raise its error as it was.

        ``CommandUnavailableError`` (naming the command and the server) if that server
        is gone or does not take the call in time.
        """
