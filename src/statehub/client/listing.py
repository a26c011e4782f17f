"""What a client can see on the server besides the values: leases, locks, sessions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A live lease: its key, whether this client holds it, seconds left (None: no expiry)."""

    key: str
    mine: bool
    seconds_left: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LockHolder:
    """A session holding a read/write lock, and the name its client gave."""

    session: str
    client: str


@dataclass(frozen=True, slots=True)
class ReleasedHold:
    """A hold an admin's ``force_release`` took away: the holder's session ("" if not a
    session, e.g. a NanoVer client), the lock owner's name, and whether it was told."""

    session: str
    owner: str
    told: bool


def released_from_wire(reply: dict[str, Any]) -> list[ReleasedHold]:
    """The holds a ``force_release`` reply lists."""
    return [
        ReleasedHold(str(hold["session"]), str(hold["owner"]), bool(hold["told"]))
        for hold in reply["released"]
    ]


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A held read/write lock: mode, holders, whether this client is one, how many wait."""

    key: str
    mode: Literal["exclusive", "shared"]
    holders: tuple[LockHolder, ...]
    mine: bool
    waiting: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session connected to the server; ``you`` marks this client's own."""

    session: str
    client: str
    peer: str
    transport: str
    subscriptions: int
    you: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lock_from_wire(wire: dict[str, Any]) -> LockInfo:
    holders = tuple(LockHolder(h["session"], h["client"]) for h in wire["holders"])
    return LockInfo(wire["key"], wire["mode"], holders, wire["mine"], wire["waiting"])


def session_from_wire(wire: dict[str, Any]) -> SessionInfo:
    return SessionInfo(
        wire["session"],
        wire["client"],
        wire["peer"],
        wire.get("transport", ""),
        wire["subscriptions"],
        wire["you"],
    )


__all__ = ["LeaseInfo", "LockHolder", "LockInfo", "SessionInfo"]
