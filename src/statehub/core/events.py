"""A minimal callback event (NanoVer's ``content_updated`` is one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Event:
    """Callbacks called with the keyword arguments given to ``invoke``, in order added."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []

    def add_callback(self, callback: Callable[..., Any]) -> None:
        self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[..., Any]) -> None:
        """Remove ``callback``; ``ValueError`` if it was never added."""
        self._callbacks.remove(callback)

    @property
    def has_callbacks(self) -> bool:
        return bool(self._callbacks)

    def invoke(self, **kwargs: Any) -> None:
        for callback in list(self._callbacks):
            callback(**kwargs)
