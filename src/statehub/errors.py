"""Exceptions shared by every layer; across the network they keep their type and message."""

from __future__ import annotations


class StatehubError(Exception):
    """Base class of statehub's own errors."""


class ObjectFrozenError(StatehubError):
    """An operation cannot be performed because the object has been frozen."""


class ResourceLockedError(StatehubError):
    """Keys are leased by another owner, so the change or lease request was refused.

    ``keys`` names the keys that were in the way.
    """

    def __init__(self, message: str, keys: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.keys = keys


class LockFailed(StatehubError):
    """A read/write lock could not be acquired (timeout, refusal or lost connection)."""


class LockUpgradeError(StatehubError, RuntimeError):
    """An owner holding a shared lock asked for it exclusively (that would deadlock)."""


class LockNotOwnedError(StatehubError, RuntimeError):
    """A lock was released by an owner that does not hold it in that mode."""


class CommandFailed(StatehubError):
    """A registered command raised; the message names the command and the original error."""


class CommandUnavailableError(StatehubError):
    """A command offered by another server sharing the state could not be run there: that
    server is gone or did not answer in time. The message names the command and the server."""


class LimitExceeded(StatehubError):
    """A client asked for more than it may hold (subscriptions, leases, waiting requests,
    bytes); the message names the limit. Its other requests go on."""


class UnauthenticatedError(StatehubError):
    """The credential was missing where one is required, unknown, expired or malformed."""


class PermissionDeniedError(StatehubError):
    """The identity is known but lacks the right; the message names the key and the right."""


class ValueLimitError(StatehubError, ValueError):
    """A key or value is over one of the documented limits (nesting depth, int size, key
    or value size): some protocol could not carry it, so it was refused. The message names
    the key, where in the value, and the limit."""
