"""Errors across the network: each keeps its type, message and details on the other side.

A registry maps an exception type's name to the class and the gRPC status name it travels
with. ``error_to_wire`` turns an exception into the ``error`` map of a reply;
``error_from_wire`` turns it back into an exception of the same type (an unknown type
comes back as ``StatehubError`` with the same message). Types are registered by their
plain class name, so both ends must agree on names, not on module paths.

Details (a JSON-like dict) come from an exception's optional ``wire_details()`` method and
go back through its optional ``from_wire_details(message, details)`` classmethod, or from
converters given to ``register_error`` for classes that cannot grow those methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statehub.errors import (
    CommandFailedError,
    CommandUnavailableError,
    ConflictError,
    DataFileError,
    DurabilityError,
    HeartbeatTimeoutError,
    LimitExceededError,
    LockFailedError,
    LockNotOwnedError,
    LockUpgradeError,
    MessageTooLargeError,
    ObjectFrozenError,
    PermissionDeniedError,
    ProtocolError,
    RequestCancelledError,
    ResourceLockedError,
    StatehubError,
    StoreUnavailableError,
    UnauthenticatedError,
    ValueLimitError,
)

__all__ = [
    "STATUS_NAMES",
    "DetailsOf",
    "ErrorType",
    "FromDetails",
    "error_from_wire",
    "error_message",
    "error_to_wire",
    "register_error",
    "register_former_name",
    "registered",
    "status_of",
]

#: gRPC status names (``grpc.StatusCode[name]`` on a gRPC transport).
STATUS_NAMES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)


DetailsOf = Callable[[BaseException], dict[str, Any]]
FromDetails = Callable[[str, dict[str, Any]], BaseException]


@dataclass(frozen=True, slots=True)
class ErrorType:
    """How one exception type travels: its class, status, and optional details converters."""

    cls: type[BaseException]
    status: str
    to_details: DetailsOf | None = None
    from_details: FromDetails | None = None


_REGISTRY: dict[str, ErrorType] = {}


def register_error(
    cls: type[BaseException],
    status: str,
    *,
    to_details: DetailsOf | None = None,
    from_details: FromDetails | None = None,
) -> None:
    """Let ``cls`` travel by its name with gRPC status ``status`` (e.g. ``"NOT_FOUND"``).

    Registering a name again replaces the earlier entry (a subclass may take over a name).
    """
    if status not in STATUS_NAMES:
        raise ValueError(f"unknown gRPC status name {status!r}")
    _REGISTRY[cls.__name__] = ErrorType(cls, status, to_details, from_details)


def register_former_name(name: str, cls: type[BaseException]) -> None:
    """Read ``name`` as ``cls`` (registered already): the name ``cls`` had before a rename,
    so an error from a server of the release before keeps its type."""
    _REGISTRY[name] = _REGISTRY[cls.__name__]


def registered(name: str) -> ErrorType | None:
    """The registry entry for a type name, if any."""
    return _REGISTRY.get(name)


def status_of(error: BaseException) -> str:
    """The gRPC status name for ``error``: that of its nearest registered class."""
    entry = _entry_for(type(error))
    return entry.status if entry is not None else "UNKNOWN"


def error_message(error: BaseException) -> str:
    """The message of ``error`` (a KeyError's own text, not its repr-quoted form)."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        return error.args[0]
    return str(error)


def error_to_wire(error: BaseException) -> dict[str, Any]:
    """``{"type", "message", "status", "details"}`` for an error reply."""
    details: dict[str, Any] = {}
    entry = _REGISTRY.get(type(error).__name__)
    wire_details = getattr(error, "wire_details", None)
    if callable(wire_details):
        details = dict(wire_details())
    elif entry is not None and entry.cls is type(error) and entry.to_details is not None:
        details = entry.to_details(error)
    return {
        "type": type(error).__name__,
        "message": error_message(error),
        "status": status_of(error),
        "details": details,
    }


def error_from_wire(wire: dict[str, Any]) -> Exception:
    """The exception an ``error`` map describes; unknown types become ``StatehubError``."""
    name = wire.get("type")
    message = wire.get("message")
    message = message if isinstance(message, str) else repr(message)
    details = wire.get("details")
    details = details if isinstance(details, dict) else {}
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        return StatehubError(message)
    error: BaseException
    from_wire_details = getattr(entry.cls, "from_wire_details", None)
    try:
        if callable(from_wire_details):
            error = from_wire_details(message, details)
        elif entry.from_details is not None:
            error = entry.from_details(message, details)
        else:
            error = entry.cls(message)
    except Exception:  # a class whose constructor wants more than a message
        return StatehubError(f"{name}: {message}")
    if not isinstance(error, Exception):
        return StatehubError(f"{name}: {message}")
    return error


def _entry_for(cls: type[BaseException]) -> ErrorType | None:
    for base in cls.__mro__:
        entry = _REGISTRY.get(base.__name__)
        if entry is not None and entry.cls is base:
            return entry
    return None


def _locked_details(error: BaseException) -> dict[str, Any]:
    keys: frozenset[str] = getattr(error, "keys", frozenset())
    return {"keys": sorted(keys)}


def _locked_from_details(message: str, details: dict[str, Any]) -> BaseException:
    keys: object = details.get("keys", [])
    names = [key for key in keys if isinstance(key, str)] if isinstance(keys, list) else []
    return ResourceLockedError(message, frozenset(names))


register_error(StatehubError, "UNKNOWN")
register_error(TypeError, "INVALID_ARGUMENT")
register_error(ValueError, "INVALID_ARGUMENT")
register_error(ValueLimitError, "INVALID_ARGUMENT")
register_error(KeyError, "NOT_FOUND")
register_error(
    ResourceLockedError,
    "FAILED_PRECONDITION",
    to_details=_locked_details,
    from_details=_locked_from_details,
)
register_error(ConflictError, "FAILED_PRECONDITION")
register_error(LockUpgradeError, "FAILED_PRECONDITION")
register_error(LockNotOwnedError, "FAILED_PRECONDITION")
register_error(LockFailedError, "ABORTED")
register_error(CommandFailedError, "UNKNOWN")
register_error(CommandUnavailableError, "UNAVAILABLE")
register_error(ObjectFrozenError, "UNAVAILABLE")
register_error(ProtocolError, "INVALID_ARGUMENT")
register_error(MessageTooLargeError, "RESOURCE_EXHAUSTED")
register_error(LimitExceededError, "RESOURCE_EXHAUSTED")
register_error(RequestCancelledError, "CANCELLED")
register_error(DurabilityError, "DATA_LOSS")
register_error(DataFileError, "FAILED_PRECONDITION")
register_error(StoreUnavailableError, "UNAVAILABLE")
register_error(PermissionDeniedError, "PERMISSION_DENIED")
register_error(UnauthenticatedError, "UNAUTHENTICATED")
register_error(HeartbeatTimeoutError, "UNAVAILABLE")
# Renamed in 0.2 (LockFailed -> LockFailedError, ...): a server of 0.1 still sends these.
for _former, _renamed in (
    ("LockFailed", LockFailedError),
    ("CommandFailed", CommandFailedError),
    ("LimitExceeded", LimitExceededError),
    ("RequestCancelled", RequestCancelledError),
):
    register_former_name(_former, _renamed)
