"""The ``statehub`` command: one module per group of subcommands."""

from __future__ import annotations

import click

from statehub.cli.bench import bench
from statehub.cli.serve import serve


@click.group()
@click.version_option(package_name="statehub")
def main() -> None:
    """statehub: one key/value state shared by many clients, in sync."""


main.add_command(serve)
main.add_command(bench)
