"""The session's first exchange, shared by both connections (event loop and socket).

The client sends ``hello`` (wanted token, client name, credential); the server answers
with the session's facts: its id, the lease owner token, its revision and history id
(``epoch``), its keepalive and its frame size limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from statehub.errors import ProtocolError
from statehub.protocol import decode_batch, error_from_wire

#: The frame size limit assumed until the server's hello says otherwise.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def hello_message(
    hello_id: int, token: str | None, client_name: str, credential: str | None
) -> dict[str, Any]:
    hello: dict[str, Any] = {"id": hello_id, "op": "hello", "token": token, "client": client_name}
    if credential is not None:
        hello["credential"] = credential
    return hello


@dataclass(frozen=True, slots=True)
class Welcome:
    """What the server's answer to ``hello`` says about the new session."""

    session: str | None
    token: str | None
    revision: int
    epoch: object
    keepalive_s: float
    max_message_bytes: int


def welcome_from(frame: bytes, hello_id: int, target: str) -> Welcome:
    """The server's answer to hello ``hello_id`` in ``frame``; its error if it refused."""
    for message in decode_batch(frame):
        if message.get("id") is None and "error" in message:  # refused before any session
            raise error_from_wire(message["error"] or {})
        if message.get("id") != hello_id:
            continue
        if "error" in message:
            raise error_from_wire(message["error"])
        reply = message.get("ok") or {}
        return Welcome(
            session=reply.get("session"),
            token=reply.get("token"),
            revision=int(reply.get("revision") or 0),
            epoch=reply.get("epoch"),
            keepalive_s=float(reply.get("keepalive_s") or 15.0),
            max_message_bytes=int(reply.get("max_message_bytes") or DEFAULT_MAX_MESSAGE_BYTES),
        )
    raise ProtocolError(f"statehub at {target} did not answer hello")
