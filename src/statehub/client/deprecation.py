"""The one way a client method's former name warns (docs/versioning.md: a deprecated
Python name raises a ``DeprecationWarning`` when used, naming its replacement)."""

from __future__ import annotations

import warnings


def warn_renamed(former: str, current: str) -> None:
    """Warn, at the caller's caller (the user's line), that ``former`` is now ``current``."""
    warnings.warn(f"{former} is deprecated, use {current}", DeprecationWarning, stacklevel=3)
