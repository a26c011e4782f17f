"""Dripline v3 messages on AMQP 0-9-1: headers, payloads, codes (no I/O here).

A dripline message is an AMQP message whose body is the JSON payload
(``content_encoding`` ``application/json``) and whose header table carries
``message_type``, ``message_operation``, ``specifier``, ``lockout_key``, ``timestamp``,
``sender_info`` and, on replies, ``return_code`` and ``return_message``. Integers go out
unsigned (dripline-cpp reads them as such) and are accepted in any integer kind.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pamqp.encode

from statehub.core.values import JsonValue
from statehub.endpoints.lockout import canonical_key
from statehub.endpoints.return_codes import (
    DecodingFailedError,
    EndpointError,
    InvalidEncodingError,
    InvalidMethodError,
    error_class_for,
)

REPLY = 2
REQUEST = 3
ALERT = 4

OP_SET = 0
OP_GET = 1
OP_CMD = 9
OPERATIONS = {"set": OP_SET, "get": OP_GET, "cmd": OP_CMD}
OPERATION_NAMES = {code: name for name, code in OPERATIONS.items()}

ENCODING = "application/json"
#: dripline-cpp sends the nil UUID for "no lockout key".
NIL_UUID = "00000000-0000-0000-0000-000000000000"
#: The routing key every service answers (its first token).
BROADCAST = "broadcast"


class Unsigned(int):
    """An int that goes into an AMQP header table as an unsigned 32-bit integer."""


def _encode_table_value(value: Any) -> bytes:
    if isinstance(value, Unsigned):
        return b"i" + pamqp.encode.long_uint(int(value))
    return _pamqp_encode_table_value(value)


# pamqp picks the smallest *signed* type for an int; dripline's headers are unsigned.
# Only ``Unsigned`` values take the new path, so other users of pamqp see no change.
_pamqp_encode_table_value = pamqp.encode.encode_table_value
pamqp.encode.encode_table_value = _encode_table_value


def timestamp(now: dt.datetime | None = None) -> str:
    """RFC 3339 in UTC with milliseconds, as dripline writes it (``...T15:00:00.000Z``)."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _version() -> str:
    try:
        return metadata.version("statehub")
    except metadata.PackageNotFoundError:
        return "unknown"


def sender_info(service_name: str) -> dict[str, Any]:
    """Who sent a message: the ``sender_info`` header table."""
    return {
        "exe": os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else sys.executable,
        "hostname": socket.gethostname(),
        "username": _username(),
        "service_name": service_name,
        "versions": {"statehub": {"version": _version(), "commit": "", "package": "statehub"}},
    }


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def request_headers(
    operation: int,
    specifier: str | None,
    lockout_key: str | None,
    sender: dict[str, Any],
) -> dict[str, Any]:
    return {
        "message_type": Unsigned(REQUEST),
        "message_operation": Unsigned(operation),
        "specifier": specifier or "",
        "lockout_key": lockout_key or NIL_UUID,
        "timestamp": timestamp(),
        "sender_info": sender,
    }


def reply_headers(
    code: int, message: str, specifier: str | None, sender: dict[str, Any]
) -> dict[str, Any]:
    return {
        "message_type": Unsigned(REPLY),
        "return_code": Unsigned(code),
        "return_message": message,
        "specifier": specifier or "",
        "timestamp": timestamp(),
        "sender_info": sender,
    }


def alert_headers(specifier: str | None, sender: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_type": Unsigned(ALERT),
        "specifier": specifier or "",
        "timestamp": timestamp(),
        "sender_info": sender,
    }


def encode_payload(payload: JsonValue) -> bytes:
    """The JSON body of a message (NaN and infinities are not JSON: refused)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def decode_payload(body: bytes, content_encoding: str | None) -> JsonValue:
    """The payload of a message body; 301 for another encoding, 302 if it is not JSON."""
    if content_encoding != ENCODING:
        raise InvalidEncodingError(
            f"content_encoding must be {ENCODING!r}, got {content_encoding!r}"
        )
    if not body:
        return None
    try:
        payload: JsonValue = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DecodingFailedError(f"the body is not JSON: {error}") from None
    return payload


def header_int(headers: dict[str, Any], name: str) -> int | None:
    """An integer header of any integer kind; None if absent, 302 if it is not an int."""
    value = headers.get(name)
    if value is None:
        return None
    if type(value) is bool or not isinstance(value, int):
        raise DecodingFailedError(f"header {name!r} must be an integer, got {value!r}")
    return int(value)


def header_str(headers: dict[str, Any], name: str) -> str | None:
    """A string header; None if absent or empty, 302 if it is not a string."""
    value = headers.get(name)
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise DecodingFailedError(f"header {name!r} is not UTF-8 text") from None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DecodingFailedError(f"header {name!r} must be a string, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RequestHeaders:
    """What a request asks, from its headers: the operation, specifier and lockout key."""

    message_type: int
    operation: int
    specifier: str | None
    lockout_key: str | None


def parse_request_headers(headers: dict[str, Any]) -> RequestHeaders:
    """Read a request's headers: 302 if one has the wrong kind, 306 for an unknown
    operation, 308 for a lockout key that is not a UUID."""
    message_type = header_int(headers, "message_type")
    if message_type is None:
        raise DecodingFailedError("header 'message_type' is missing")
    operation = header_int(headers, "message_operation")
    if message_type == REQUEST and operation not in OPERATION_NAMES:
        known = ", ".join(f"{code} ({name})" for code, name in OPERATION_NAMES.items())
        raise InvalidMethodError(f"message_operation {operation!r} is not one of {known}")
    key = header_str(headers, "lockout_key")
    return RequestHeaders(
        message_type=message_type,
        operation=operation if operation is not None else -1,
        specifier=header_str(headers, "specifier"),
        lockout_key=None if key in (None, NIL_UUID) else canonical_key(key),
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """A dripline reply: its payload, return code and message, and all its headers."""

    payload: JsonValue
    return_code: int
    return_message: str
    headers: dict[str, Any]

    def error(self) -> EndpointError:
        """The typed error for this reply's code (an ``EndpointError`` subclass when the
        code is registered, else an ``EndpointError`` carrying the code)."""
        cls = error_class_for(self.return_code)
        message = self.return_message or "(no return message)"
        if cls is not None:
            return cls(message)
        return EndpointError(message, code=self.return_code, code_name="dripline error")


def new_id() -> str:
    return str(uuid.uuid4())
