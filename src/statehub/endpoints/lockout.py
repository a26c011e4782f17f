"""Lockout: an endpoint (or a whole service) reserved for whoever holds its key.

As in dripline: ``lock`` stores the given UUID key, or makes one, and answers it; while
locked, set and cmd must carry the key (else 307 access denied), get and ping always work;
``unlock`` needs the key or ``force``; locks never expire. Keys are UUID strings (anything
else is 308 invalid lockout key) and are compared in their canonical form.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from statehub.endpoints.return_codes import AccessDeniedError, InvalidLockoutKeyError


def canonical_key(key: object) -> str:
    """The canonical text of a UUID lockout key; ``InvalidLockoutKeyError`` otherwise."""
    if isinstance(key, uuid.UUID):
        return str(key)
    if not isinstance(key, str):
        raise InvalidLockoutKeyError(
            f"a lockout key is a UUID string, got {type(key).__name__} {key!r}"
        )
    try:
        return str(uuid.UUID(key))
    except ValueError:
        raise InvalidLockoutKeyError(f"a lockout key is a UUID string, got {key!r}") from None


def new_key() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class Lockout:
    """The lock state of one endpoint or service."""

    key: str | None = None
    tag: str | None = None

    @property
    def is_locked(self) -> bool:
        return self.key is not None

    def status(self) -> dict[str, bool | str | None]:
        """``{is_locked, tag}`` (``tag`` says who locked it, if they said)."""
        return {"is_locked": self.is_locked, "tag": self.tag}

    def admits(self, key: str | None) -> bool:
        """Whether a request carrying ``key`` (canonical, or None) may act."""
        return self.key is None or key == self.key

    def check(self, key: str | None, address: str, action: str) -> None:
        """Raise ``AccessDeniedError`` (307) unless a request carrying ``key`` may act."""
        if self.admits(key):
            return
        if key is None:
            raise AccessDeniedError(f"{address} is locked: {action} needs its lockout key")
        raise AccessDeniedError(f"{address} is locked with another key: {action} refused")

    def lock(self, key: str, tag: str | None) -> None:
        self.key = key
        self.tag = tag

    def unlock(self) -> None:
        self.key = None
        self.tag = None
