"""Split messages: a payload over the mesh's maximum travels as several AMQP messages
("chunks") with identical headers and ``message_id = <uuid>/<i>/<n>`` (i from 0).

``split`` cuts an encoded payload; ``Reassembler`` puts chunks back together and hands
out the messages whose missing chunks did not arrive in time. Pure: no I/O, no clock of
its own (the caller passes ``now``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from statehub.endpoints.return_codes import DecodingFailedError

#: dripline's default largest payload per AMQP message, in bytes.
DEFAULT_MAX_PAYLOAD_SIZE = 10_000
#: The most chunks one message may announce (bounds the memory a sender can claim).
MAX_CHUNKS = 10_000
#: The most messages being reassembled at once.
MAX_PENDING = 1_000

Context = TypeVar("Context")


def split(body: bytes, max_size: int) -> list[bytes]:
    """``body`` in pieces of at most ``max_size`` bytes (one empty piece for an empty body)."""
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    return [body[start : start + max_size] for start in range(0, len(body), max_size)] or [b""]


def message_ids(count: int, message_uuid: str | None = None) -> list[str]:
    """The ``message_id`` of each of ``count`` chunks of one message."""
    base = message_uuid or str(uuid.uuid4())
    return [f"{base}/{index}/{count}" for index in range(count)]


def parse_message_id(message_id: str | None) -> tuple[str, int, int]:
    """``(uuid, index, total)``; a plain id (or none) is a message of one chunk."""
    if not message_id:
        return str(uuid.uuid4()), 0, 1
    parts = message_id.split("/")
    if len(parts) == 1:
        return message_id, 0, 1
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        index, total = int(parts[1]), int(parts[2])
        if 0 <= index < total <= MAX_CHUNKS:
            return parts[0], index, total
    raise DecodingFailedError(
        f"message_id {message_id!r} is not <uuid> or <uuid>/<chunk>/<total chunks> "
        f"(chunk from 0, at most {MAX_CHUNKS} chunks)"
    )


@dataclass(slots=True)
class _Pending(Generic[Context]):
    total: int
    context: Context
    last_arrival: float
    pieces: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Incomplete(Generic[Context]):
    """A message whose chunks stopped arriving: which ones came, out of how many."""

    message_uuid: str
    received: list[int]
    total: int
    context: Context

    def describe(self) -> str:
        missing = [index for index in range(self.total) if index not in self.received]
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        return (
            f"message {self.message_uuid} arrived incomplete: chunk(s) {shown} of "
            f"{self.total} missing"
        )


class Reassembler(Generic[Context]):
    """Collects the chunks of split messages. ``context`` is whatever the caller needs
    to answer the message later (kept from its first chunk)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pending: dict[str, _Pending[Context]] = {}

    def add(
        self, message_id: str | None, body: bytes, context: Context, now: float
    ) -> tuple[bytes, Context] | None:
        """Take one chunk; the whole body (and its context) once the last one is in.

        ``DecodingFailedError`` for a malformed id, a chunk count that changes between
        chunks of one message, or too many messages in progress.
        """
        message_uuid, index, total = parse_message_id(message_id)
        if total == 1:
            return body, context
        pending = self._pending.get(message_uuid)
        if pending is None:
            if len(self._pending) >= MAX_PENDING:
                raise DecodingFailedError(
                    f"too many split messages in progress (limit {MAX_PENDING})"
                )
            pending = self._pending[message_uuid] = _Pending(total, context, now)
        elif pending.total != total:
            del self._pending[message_uuid]
            raise DecodingFailedError(
                f"message {message_uuid}: chunk {index} says {total} chunks, "
                f"an earlier one said {pending.total}"
            )
        pending.pieces[index] = body
        pending.last_arrival = now
        if len(pending.pieces) < total:
            return None
        del self._pending[message_uuid]
        return b"".join(pending.pieces[i] for i in range(total)), pending.context

    def expire(self, now: float) -> list[Incomplete[Context]]:
        """Drop and return the messages that got no chunk for ``timeout`` seconds."""
        stale = [
            key
            for key, pending in self._pending.items()
            if now - pending.last_arrival >= self.timeout
        ]
        expired = []
        for key in stale:
            pending = self._pending.pop(key)
            expired.append(Incomplete(key, sorted(pending.pieces), pending.total, pending.context))
        return expired

    def next_deadline(self) -> float | None:
        """When the oldest waiting message expires, or None if none is waiting."""
        if not self._pending:
            return None
        return min(pending.last_arrival for pending in self._pending.values()) + self.timeout

    def __len__(self) -> int:
        return len(self._pending)
