"""What one session may hold on the server, so that no client can run away with memory.

A client that reaches a limit gets ``LimitExceededError`` (status RESOURCE_EXHAUSTED) for the
request that would go over it, or is slowed down (backpressure) where waiting is the
better answer: a client that sends requests without reading the replies stops being read
once ``max_queued_bytes`` of replies and change batches wait for it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from statehub.core.limits import MAX_VALUE_BYTES, ValueSizeLimits
from statehub.errors import LimitExceededError

__all__ = [
    "MAX_CLIENT_NAME_CHARS",
    "MAX_TOKEN_BYTES",
    "LimitExceededError",
    "SessionLimits",
    "check_client_name",
    "check_token",
    "check_value_limits_fit",
]

#: The longest client name a hello may give, in characters: a name is shown in every
#: ``list_sessions`` and ``list_locks`` reply, so one client's name must not make those
#: replies large for everyone.
MAX_CLIENT_NAME_CHARS = 256
#: The largest credential (bearer token, JWT) or client-chosen token a client may present,
#: in UTF-8 bytes: generous for a JWT with many claims, and kept per session (or per lease
#: owner) for as long as it lasts.
MAX_TOKEN_BYTES = 16 * 1024


#: What a session protocol frame needs beyond the largest value it carries: its key, the
#: message's framing, and other keys of the same change batch. The default 3 MiB value
#: limit and 4 MiB frames keep exactly this much.
VALUE_HEADROOM_BYTES = 1024 * 1024


def check_value_limits_fit(limits: ValueSizeLimits, max_message_bytes: int) -> None:
    """``ValueError`` naming the prefix and both settings if a limit raised above the
    default ``MAX_VALUE_BYTES`` lets a key hold a value that a session protocol frame of
    ``max_message_bytes`` cannot carry to a reader. (Limits up to the default stand with
    any frame size, as they always have: a smaller frame limit bounds the writes itself.)"""
    room = max_message_bytes - VALUE_HEADROOM_BYTES
    for prefix, size in (("", limits.default), *limits.prefixes):
        if size > MAX_VALUE_BYTES and size > room:
            where = f"keys under {prefix!r}" if prefix else "every key"
            raise ValueError(
                f"a value size limit of {size:,} bytes for {where} does not fit in a frame of "
                f"max_message_bytes={max_message_bytes:,} (it needs {size + VALUE_HEADROOM_BYTES:,}"
                " with 1 MiB for the key and framing): raise --max-message-bytes or lower the "
                "limit"
            )


def check_client_name(name: str, where: str) -> str:
    """``name``, or ``LimitExceededError`` naming ``where`` and the limit if it is too long."""
    if len(name) > MAX_CLIENT_NAME_CHARS:
        raise LimitExceededError(
            f"{where}: a client name of {len(name):,} characters is over the limit of "
            f"{MAX_CLIENT_NAME_CHARS} characters (docs/limits.md)"
        )
    return name


def check_token(token: str, where: str) -> str:
    """``token``, or ``LimitExceededError`` naming ``where`` and the limit if it is too large."""
    # A str of n characters is at most 4n bytes of UTF-8: short ones need no encoding.
    if len(token) * 4 > MAX_TOKEN_BYTES:
        size = len(token.encode("utf-8", "surrogatepass"))
        if size > MAX_TOKEN_BYTES:
            raise LimitExceededError(
                f"{where}: a token of {size:,} bytes is over the limit of {MAX_TOKEN_BYTES} "
                "bytes (16 KiB; docs/limits.md)"
            )
    return token


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
    #: Commands one client may serve at once (a NanoVer WebSocket client's ``register``).
    max_registrations: int = 1_000

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{field.name} must be an int >= 1, got {value!r}")
