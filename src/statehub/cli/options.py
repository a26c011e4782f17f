"""Options shared by the commands that talk to a server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from statehub.client.connection import DEFAULT_PORT

F = TypeVar("F", bound=Callable[..., Any])


def server_options(function: F) -> F:
    """Add ``--host`` and ``--port`` (the server to talk to)."""
    function = click.option(
        "--port",
        type=click.IntRange(0, 65535),
        default=DEFAULT_PORT,
        show_default=True,
        help="Server port.",
    )(function)
    function = click.option(
        "--host", default="localhost", show_default=True, help="Server address."
    )(function)
    return function
