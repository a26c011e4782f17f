"""The identity a command runs for, so server-side code can check an admin right.

A session sets ``current_principal`` around each ``call``; code running outside any
session (the server's own, a test) acts as ``UNRESTRICTED``.
"""

from __future__ import annotations

from contextvars import ContextVar

from statehub.auth.permissions import UNRESTRICTED, AdminRight, Principal

current_principal: ContextVar[Principal] = ContextVar("statehub_principal", default=UNRESTRICTED)


def require_admin(action: AdminRight, op: str) -> None:
    """``PermissionDeniedError`` unless the identity running this code has ``action``."""
    current_principal.get().require_admin(action, op)
