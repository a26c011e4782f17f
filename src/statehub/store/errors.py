"""Errors of durable stores: data files that cannot be used, writes that did not reach disk."""

from __future__ import annotations

from statehub.errors import StatehubError


class DataFileError(StatehubError):
    """A data file is unreadable, corrupt, in use, or belongs to something else.

    Raised at start-up; the message names the file, and nothing in it has been changed.
    """


class DataDirectoryError(DataFileError):
    """The data directory cannot be created or written: a read-only mount, no permission,
    or a file where the directory should be. The message names it; nothing was changed."""


class DurabilityError(StatehubError):
    """Committed changes could not be written to disk.

    The store refuses every further change once this happens: the state in memory would
    otherwise drift away from what a restart would bring back. A writer waiting for its
    change to be durable gets this error, and cannot know whether the change survives a
    restart.
    """


class StoreUnavailableError(StatehubError):
    """The shared store (Redis) cannot be reached: changes are refused until it is back.

    Reads are still answered from the server's copy of the state, which stops moving
    while the store is away; nothing of a refused change was applied.
    """
