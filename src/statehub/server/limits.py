"""What one session may hold on the server, so that no client can run away with memory.

A client that reaches a limit gets ``LimitExceeded`` (status RESOURCE_EXHAUSTED) for the
request that would go over it, or is slowed down (backpressure) where waiting is the
better answer: a client that sends requests without reading the replies stops being read
once ``max_queued_bytes`` of replies and change batches wait for it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from statehub.errors import LimitExceeded

__all__ = ["LimitExceeded", "SessionLimits"]


@dataclass(frozen=True)
class SessionLimits:
    """Per-session bounds; the defaults suit a lab's clients and are documented."""

    #: Encoded replies and change batches waiting to be written to one client, above
    #: which the session stops reading that client's requests and flushing its
    #: subscriptions (the changes keep coalescing meanwhile).
    max_queued_bytes: int = 16 * 1024 * 1024
    #: Subscriptions open at once on one session.
    max_subscriptions: int = 100
    #: Requests waiting at once on one session (lock waits, running commands, durable
    #: acknowledgements).
    max_pending_requests: int = 1_000
    #: Keys one session may hold leased at once.
    max_leases: int = 10_000

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{field.name} must be an int >= 1, got {value!r}")
