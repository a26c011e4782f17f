"""Optional dependencies ("extras"): what ``pip install statehub`` leaves out, and the error
that names the extra to install when a feature needs one that is missing.

A command that does not need an extra never imports it, so a missing extra breaks only the
features that need it (``statehub --help`` works with none installed).
"""

from __future__ import annotations

from importlib.util import find_spec

#: Extra -> the module it installs, looked for without importing it.
EXTRA_MODULES = {"redis": "redis", "dripline": "aio_pika"}


class MissingExtraError(ImportError):
    """A feature needs an extra that is not installed; the message says how to install it."""


def require_extra(extra: str, feature: str) -> None:
    """Raise ``MissingExtraError`` unless ``extra`` is installed; ``feature`` names what
    needs it, as the user asked for it (``--store redis://``)."""
    if find_spec(EXTRA_MODULES[extra]) is None:
        raise MissingExtraError(
            f"{feature} needs the {extra!r} extra: pip install 'statehub[{extra}]'"
        )
