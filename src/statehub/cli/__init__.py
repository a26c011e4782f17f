"""The ``statehub`` command: one module per group of subcommands.

A subcommand's module is imported when that subcommand runs (``LAZY_COMMANDS``), so
``statehub get`` does not load what only ``serve`` or the endpoints need.
"""

from __future__ import annotations

import importlib

import click

from statehub.extras import MissingExtraError

#: Subcommand name -> "module:attribute" of its click command.
LAZY_COMMANDS = {
    "serve": "statehub.cli.serve:serve",
    "bench": "statehub.cli.bench:bench",
    "get": "statehub.cli.key_commands:get",
    "set": "statehub.cli.key_commands:set_",
    "rm": "statehub.cli.key_commands:rm",
    "watch": "statehub.cli.client_commands:watch",
    "lease": "statehub.cli.client_commands:lease",
    "lock": "statehub.cli.client_commands:lock",  # deprecated: statehub lease
    "call": "statehub.cli.client_commands:call",
    "commands": "statehub.cli.client_commands:commands",
    "keys": "statehub.cli.inspect_commands:keys",
    "leases": "statehub.cli.inspect_commands:leases",
    "locks": "statehub.cli.inspect_commands:locks",
    "sessions": "statehub.cli.inspect_commands:sessions",
    "endpoint": "statehub.cli.endpoint:endpoint",
    "history": "statehub.cli.endpoint:history",
    "auth": "statehub.cli.auth:auth",
    "dripline": "statehub.cli.dripline:dripline",
}


class LazyGroup(click.Group):
    """A group whose commands in ``LAZY_COMMANDS`` are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            module, attribute = LAZY_COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MissingExtraError as error:
            raise ExtraNotInstalled(str(error)) from None


class ExtraNotInstalled(click.ClickException):
    """A usage error (exit 2): the command asked for a feature whose extra is missing."""

    exit_code = 2


@click.group(cls=LazyGroup)
@click.version_option(package_name="statehub")
def main() -> None:
    """statehub: one key/value state shared by many clients, in sync."""
