"""The two ways a request is refused for who sent it (gRPC's statuses of the same names)."""

from __future__ import annotations

from statehub.errors import StatehubError


class UnauthenticatedError(StatehubError):
    """The credential was missing where one is required, unknown, expired or malformed."""


class PermissionDeniedError(StatehubError):
    """The identity is known but lacks the right; the message names the key and the right."""


class IdentitiesFileError(StatehubError, ValueError):
    """The identities file (``statehub serve --auth``) is unreadable or invalid.

    The message names the file, then one line per problem naming the entry and field.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")
