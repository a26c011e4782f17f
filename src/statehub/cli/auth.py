"""``statehub auth new-token | hash-token | check``: entries for the identities file."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import click

from statehub.auth import IdentitiesFileError, load_identities, token_digest


@click.group()
def auth() -> None:
    """Make tokens and check identities files (``statehub serve --auth FILE``)."""


@auth.command("new-token")
@click.argument("user")
@click.option("--role", "roles", multiple=True, help="A role of the user (repeatable).")
def new_token(user: str, roles: tuple[str, ...]) -> None:
    """Make a random token for USER: the token goes to the user, the entry to the file."""
    token = secrets.token_urlsafe(32)
    click.echo(f"token (give it to {user}; it is shown only now): {token}")
    click.echo("entry for the identities file (users:):")
    click.echo(f"  {user}:")
    click.echo(f"    roles: [{', '.join(roles)}]")
    click.echo(f"    token_sha256: [{token_digest(token)}]")


@auth.command("hash-token")
def hash_token() -> None:
    """Print the SHA-256 digest of a token read from stdin (one line)."""
    token = sys.stdin.readline().strip()
    if not token:
        raise click.UsageError(
            "give the token on stdin, e.g. echo TOKEN | statehub auth hash-token"
        )
    click.echo(token_digest(token))


@auth.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def check(path: Path) -> None:
    """Check an identities file as the server would at start."""
    try:
        identities = load_identities(path)
    except IdentitiesFileError as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"{path}: {len(identities.roles)} roles, {len(identities.users)} users, "
        f"anonymous roles: {', '.join(identities.anonymous.roles) or 'none'}"
    )
