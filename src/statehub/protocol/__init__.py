"""statehub's session protocol: the codec, errors across the wire, and the gRPC names.

See ``docs/protocol.md`` for the messages.
"""

from statehub.protocol.codec import decode_batch, encode_batch
from statehub.protocol.errors import error_from_wire, error_to_wire, register_error, status_of

#: The gRPC service and method carrying a session (a bidi stream of raw bytes).
SERVICE_NAME = "statehub.v1.Hub"
SESSION_METHOD = "Session"
SESSION_PATH = f"/{SERVICE_NAME}/{SESSION_METHOD}"

__all__ = [
    "SERVICE_NAME",
    "SESSION_METHOD",
    "SESSION_PATH",
    "decode_batch",
    "encode_batch",
    "error_from_wire",
    "error_to_wire",
    "register_error",
    "status_of",
]
