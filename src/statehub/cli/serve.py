"""``statehub serve``."""

from __future__ import annotations

import click


@click.command()
def serve() -> None:
    """Start a statehub server."""
    click.echo("statehub's core is installed; the network server is not built yet.")
