"""The errors of authentication: the two refusals (shared with clients, so they live in
``statehub.errors``) and a bad identities file."""

from __future__ import annotations

from statehub.errors import PermissionDeniedError, StatehubError, UnauthenticatedError

__all__ = ["IdentitiesFileError", "PermissionDeniedError", "UnauthenticatedError"]


class IdentitiesFileError(StatehubError, ValueError):
    """The identities file (``statehub serve --auth``) is unreadable or invalid.

    The message names the file, then one line per problem naming the entry and field.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")
