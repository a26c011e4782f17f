"""The ``statehub`` command."""

from __future__ import annotations

import click

import statehub


@click.group()
@click.version_option(package_name="statehub")
def main() -> None:
    """statehub: a shared key/value state for many clients."""


@main.command()
def serve() -> None:
    """Start a statehub server."""
    click.echo(f"statehub {statehub.__name__} core is installed; the network server comes next.")
