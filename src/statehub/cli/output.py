"""``--output json|table``: JSON for scripts, tables (drawn by rich) for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from statehub.core.values import json_default

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "json")


def output_option(default: str = "table") -> Callable[[F], F]:
    """Add ``--output/-o json|table`` to a command that prints data."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice(FORMATS),
        default=default,
        show_default=True,
        help="json: machine-readable; table: for reading.",
    )


def dumps(value: Any) -> str:
    """One line of JSON, text kept as it is (no \\u escapes), bytes as ``{"$bytes": base64}``."""
    return json.dumps(value, ensure_ascii=False, default=json_default)


def emit(
    output: str,
    data: Any,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    empty: str,
) -> None:
    """Print ``data`` as JSON, or ``rows`` as a table with ``columns`` (``empty`` if none)."""
    if output == "json":
        click.echo(dumps(data))
        return
    if not rows:
        click.echo(empty, err=True)
        return
    # Imported here: only a table needs rich, and `statehub get` should start fast.
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    # Piped, a table keeps its full width (a terminal's width would cut long cells).
    Console(width=None if sys.stdout.isatty() else 100_000).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    return dumps(value)
