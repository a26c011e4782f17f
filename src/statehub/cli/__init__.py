"""The ``statehub`` command: one module per group of subcommands."""

from __future__ import annotations

import click

from statehub.cli.auth import auth
from statehub.cli.bench import bench
from statehub.cli.client_commands import CLIENT_COMMANDS
from statehub.cli.dripline import dripline
from statehub.cli.endpoint import ENDPOINT_COMMANDS
from statehub.cli.serve import serve


@click.group()
@click.version_option(package_name="statehub")
def main() -> None:
    """statehub: one key/value state shared by many clients, in sync."""


main.add_command(serve)
main.add_command(bench)
main.add_command(auth)
main.add_command(dripline)
for _command in CLIENT_COMMANDS:
    main.add_command(_command)
for _command in ENDPOINT_COMMANDS:
    main.add_command(_command)
