"""A change stream the client wants, kept across sessions; shared by both clients.

Kept apart from ``connection`` so the blocking client over TCP (and so ``statehub get``)
does not import asyncio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

Message = dict[str, Any]
BatchHandler = Callable[[Message], None]


@dataclass(eq=False, slots=True)
class Subscription:
    """A change stream the client wants. It outlives sessions: resumed from ``revision``."""

    interval: float
    prefix: str
    handler: BatchHandler
    #: The last revision a batch of this subscription carried (None before the first),
    #: and the epoch (history) it counts in: a resume names both, and the server sends a
    #: snapshot unless that history is its own and still holds the revision.
    revision: int | None = None
    epoch: object = None
    #: The server's id for it on the current session (None while not subscribed).
    sub_id: int | None = None

    def deliver(self, message: Message, epoch: object) -> None:
        """Hand a batch to the handler, first noting its revision and the ``epoch`` (the
        session's history) it counts in, for the resume."""
        revision = message.get("revision")
        if type(revision) is int:
            self.revision, self.epoch = revision, epoch
        try:
            self.handler(message)
        except Exception:
            logger.exception("subscription handler failed")
