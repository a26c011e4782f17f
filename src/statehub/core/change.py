"""DictionaryChange: a set of key updates and removals, the unit of every state change."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class DictionaryChange:
    """Keys updated to new values, and keys removed.

    The given mapping and iterable are copied, so later changes to them by the caller do
    not alter this change.
    """

    __slots__ = ("removals", "updates")

    def __init__(
        self,
        updates: Mapping[str, Any] | None = None,
        removals: Iterable[str] | None = None,
    ) -> None:
        self.updates: dict[str, Any] = dict(updates) if updates is not None else {}
        self.removals: set[str] = set(removals) if removals is not None else set()

    @classmethod
    def from_dict(cls, dictionary: Mapping[str, Any]) -> DictionaryChange:
        """Build a change from ``{"updates": {...}, "removals": [...]}`` (both optional)."""
        unknown = set(dictionary) - {"updates", "removals"}
        if unknown:
            raise ValueError(
                f"DictionaryChange.from_dict: unknown fields {sorted(unknown)!r} "
                "(expected 'updates' and 'removals')"
            )
        return cls(dictionary.get("updates"), dictionary.get("removals"))

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"updates": {...}, "removals": [...]}`` (removals sorted, for stable output)."""
        return {"updates": dict(self.updates), "removals": sorted(self.removals)}

    def __bool__(self) -> bool:
        return bool(self.updates or self.removals)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DictionaryChange):
            return NotImplemented
        return self.updates == other.updates and self.removals == other.removals

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DictionaryChange(updates={self.updates!r}, removals={self.removals!r})"
