"""Dripline return codes as an exception hierarchy that keeps its code across the network.

Each code is a subclass of ``EndpointError`` (itself a ``StatehubError``, so the command
registry passes it on unchanged) with class attributes ``code`` and ``code_name``.
Every class is registered with ``statehub.protocol.errors`` by its class name, and its
wire details carry the code, so a client gets the same type, message and code back.

Applications add their own codes (>= 1000) with ``define_return_code``; registering a code
twice fails, as in dripline.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from statehub.errors import StatehubError
from statehub.protocol.errors import register_error

#: The first code applications may register (dripline reserves everything below).
FIRST_APPLICATION_CODE = 1000


class EndpointError(StatehubError):
    """An endpoint operation failed with a dripline return code.

    ``str(error)`` is ``"<code> <code name>: <reason>"``; ``reason`` is the text alone.
    An instance may carry a code its class does not know (an application code that came
    over the network to a process that never registered it).
    """

    code: ClassVar[int] = 999
    code_name: ClassVar[str] = "unhandled exception"
    #: gRPC status name the error travels with.
    status: ClassVar[str] = "UNKNOWN"

    def __init__(self, reason: str, *, code: int | None = None, code_name: str | None = None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code  # type: ignore[misc]
        if code_name is not None:
            self.code_name = code_name  # type: ignore[misc]

    def __str__(self) -> str:
        return f"{self.code} {self.code_name}: {self.reason}"

    def wire_details(self) -> dict[str, Any]:
        return {"code": self.code, "code_name": self.code_name, "reason": self.reason}

    @classmethod
    def from_wire_details(cls, message: str, details: dict[str, Any]) -> EndpointError:
        reason = details.get("reason")
        code = details.get("code")
        code_name = details.get("code_name")
        return cls(
            reason if isinstance(reason, str) else message,
            code=code if type(code) is int and code != cls.code else None,
            code_name=code_name
            if isinstance(code_name, str) and code_name != cls.code_name
            else None,
        )


class NoActionTakenError(EndpointError):
    code = 1
    code_name = "no action taken"
    status = "FAILED_PRECONDITION"


class DeprecatedFeatureError(EndpointError):
    code = 2
    code_name = "deprecated"
    status = "UNIMPLEMENTED"


class DryRunError(EndpointError):
    code = 3
    code_name = "dry run"
    status = "ABORTED"


class OfflineError(EndpointError):
    code = 4
    code_name = "offline"
    status = "UNAVAILABLE"


class SubServiceWarning(EndpointError):
    code = 5
    code_name = "sub-service warning"
    status = "UNKNOWN"


class AmqpError(EndpointError):
    code = 100
    code_name = "AMQP error"
    status = "UNAVAILABLE"


class BrokerConnectionError(AmqpError):
    code = 101
    code_name = "broker connection"


class InvalidRoutingKeyError(AmqpError):
    """No endpoint or service has the requested address."""

    code = 102
    code_name = "invalid routing key"
    status = "NOT_FOUND"


class ResourceError(EndpointError):
    code = 200
    code_name = "resource error"
    status = "UNAVAILABLE"


class ResourceConnectionError(ResourceError):
    code = 201
    code_name = "resource connection"


class NoResponseError(ResourceError):
    code = 202
    code_name = "no response"
    status = "DEADLINE_EXCEEDED"


class SubServiceError(ResourceError):
    code = 203
    code_name = "sub-service error"


class ServiceError(EndpointError):
    code = 300
    code_name = "service error"
    status = "INTERNAL"


class InvalidEncodingError(ServiceError):
    code = 301
    code_name = "invalid encoding"
    status = "INVALID_ARGUMENT"


class DecodingFailedError(ServiceError):
    code = 302
    code_name = "decoding failed"
    status = "INVALID_ARGUMENT"


class InvalidPayloadError(ServiceError):
    """A request's arguments do not fit the operation (missing, extra or wrong kind)."""

    code = 303
    code_name = "invalid payload"
    status = "INVALID_ARGUMENT"


class InvalidValueError(ServiceError):
    """A value is refused, or its calibration missed or failed."""

    code = 304
    code_name = "invalid value"
    status = "INVALID_ARGUMENT"


class TimeoutHandlingMessageError(ServiceError):
    code = 305
    code_name = "timeout handling message"
    status = "DEADLINE_EXCEEDED"


class InvalidMethodError(ServiceError):
    """``cmd`` named a method the endpoint does not have."""

    code = 306
    code_name = "invalid method"
    status = "UNIMPLEMENTED"


class AccessDeniedError(ServiceError):
    """The endpoint is locked and the request did not carry its lockout key."""

    code = 307
    code_name = "access denied"
    status = "PERMISSION_DENIED"


class InvalidLockoutKeyError(ServiceError):
    """A lockout key is not a UUID."""

    code = 308
    code_name = "invalid lockout key"
    status = "INVALID_ARGUMENT"


class InvalidSpecifierError(ServiceError):
    """``get`` asked for an attribute (a specifier) the endpoint does not have."""

    code = 310
    code_name = "invalid specifier"
    status = "NOT_FOUND"


class ClientError(EndpointError):
    code = 400
    code_name = "client error"
    status = "UNKNOWN"


class InvalidRequestError(ClientError):
    code = 401
    code_name = "invalid request"
    status = "INVALID_ARGUMENT"


class HandlingReplyError(ClientError):
    code = 402
    code_name = "error handling reply"


class UnableToSendError(ClientError):
    code = 403
    code_name = "unable to send"
    status = "UNAVAILABLE"


class ClientTimeoutError(ClientError):
    code = 404
    code_name = "client timeout"
    status = "DEADLINE_EXCEEDED"


class UnhandledExceptionError(EndpointError):
    code = 999
    code_name = "unhandled exception"


_lock = threading.Lock()
_BY_CODE: dict[int, type[EndpointError]] = {}


def _register(cls: type[EndpointError]) -> None:
    existing = _BY_CODE.get(cls.code)
    if existing is not None:
        raise ValueError(
            f"return code {cls.code} is already registered as {existing.__name__} "
            f"({existing.code_name!r})"
        )
    _BY_CODE[cls.code] = cls
    register_error(cls, cls.status)


register_error(EndpointError, EndpointError.status)
for _cls in (
    NoActionTakenError,
    DeprecatedFeatureError,
    DryRunError,
    OfflineError,
    SubServiceWarning,
    AmqpError,
    BrokerConnectionError,
    InvalidRoutingKeyError,
    ResourceError,
    ResourceConnectionError,
    NoResponseError,
    SubServiceError,
    ServiceError,
    InvalidEncodingError,
    DecodingFailedError,
    InvalidPayloadError,
    InvalidValueError,
    TimeoutHandlingMessageError,
    InvalidMethodError,
    AccessDeniedError,
    InvalidLockoutKeyError,
    InvalidSpecifierError,
    ClientError,
    InvalidRequestError,
    HandlingReplyError,
    UnableToSendError,
    ClientTimeoutError,
    UnhandledExceptionError,
):
    _register(_cls)


def define_return_code(
    code: int,
    code_name: str,
    class_name: str,
    *,
    base: type[EndpointError] = EndpointError,
    status: str | None = None,
) -> type[EndpointError]:
    """Register an application return code (>= 1000) and return its exception class.

    ``class_name`` is the name the error travels by, so client and server must define the
    code with the same name. ``ValueError`` if the code is below 1000 or already taken,
    or if ``class_name`` is already an endpoint error's name.
    """
    if type(code) is not int or code < FIRST_APPLICATION_CODE:
        raise ValueError(
            f"application return codes must be ints >= {FIRST_APPLICATION_CODE}, got {code!r}"
        )
    if not class_name.isidentifier():
        raise ValueError(f"class_name must be a Python identifier, got {class_name!r}")
    if not (isinstance(base, type) and issubclass(base, EndpointError)):
        raise TypeError(f"base must be an EndpointError subclass, got {base!r}")
    attributes: dict[str, Any] = {
        "code": code,
        "code_name": code_name,
        "status": status if status is not None else base.status,
        "__doc__": f"Application return code {code}: {code_name}.",
        "__module__": base.__module__,
    }
    with _lock:
        if any(known.__name__ == class_name for known in _BY_CODE.values()):
            raise ValueError(f"an endpoint error named {class_name!r} is already registered")
        cls = type(class_name, (base,), attributes)
        _register(cls)
    return cls


def error_class_for(code: int) -> type[EndpointError] | None:
    """The class registered for ``code``, if any."""
    with _lock:
        return _BY_CODE.get(code)


def known_return_codes() -> dict[int, str]:
    """Every registered code with its name, sorted by code."""
    with _lock:
        return {code: _BY_CODE[code].code_name for code in sorted(_BY_CODE)}
