"""Errors across the wire keep their type, message, status and details."""

from __future__ import annotations

import pytest

from statehub.errors import (
    CommandFailedError,
    LockFailedError,
    LockNotOwnedError,
    LockUpgradeError,
    MessageTooLargeError,
    ObjectFrozenError,
    ProtocolError,
    ResourceLockedError,
    StatehubError,
)
from statehub.protocol import error_from_wire, error_to_wire, register_error, status_of


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (TypeError("t"), "INVALID_ARGUMENT"),
        (ValueError("v"), "INVALID_ARGUMENT"),
        (KeyError("k"), "NOT_FOUND"),
        (ResourceLockedError("r"), "FAILED_PRECONDITION"),
        (LockUpgradeError("u"), "FAILED_PRECONDITION"),
        (LockNotOwnedError("n"), "FAILED_PRECONDITION"),
        (LockFailedError("f"), "ABORTED"),
        (CommandFailedError("c"), "UNKNOWN"),
        (ObjectFrozenError("o"), "UNAVAILABLE"),
        (ProtocolError("p"), "INVALID_ARGUMENT"),
        (MessageTooLargeError("m"), "RESOURCE_EXHAUSTED"),
        (StatehubError("s"), "UNKNOWN"),
    ],
)
def test_default_types_roundtrip_with_their_status(error: Exception, status: str) -> None:
    wire = error_to_wire(error)
    assert wire["status"] == status == status_of(error)
    back = error_from_wire(wire)
    assert type(back) is type(error)
    assert wire["message"] == (error.args[0])
    assert back.args[0] == error.args[0]


def test_key_error_message_is_not_repr_quoted() -> None:
    wire = error_to_wire(KeyError("no command named 'x'"))
    assert wire["message"] == "no command named 'x'"


def test_resource_locked_keeps_its_keys() -> None:
    wire = error_to_wire(ResourceLockedError("locked", frozenset({"b", "a"})))
    assert wire["details"] == {"keys": ["a", "b"]}
    back = error_from_wire(wire)
    assert isinstance(back, ResourceLockedError) and back.keys == frozenset({"a", "b"})


def test_unknown_types_come_back_as_statehub_error_with_the_message() -> None:
    back = error_from_wire({"type": "MysteryError", "message": "what", "status": "UNKNOWN"})
    assert type(back) is StatehubError and str(back) == "what"

    class Unregistered(LookupError):
        pass

    assert status_of(Unregistered()) == "UNKNOWN"


def test_subclasses_take_their_nearest_registered_status() -> None:
    class Refused(LockFailedError):
        pass

    assert status_of(Refused("x")) == "ABORTED"
    assert error_to_wire(Refused("x"))["type"] == "Refused"


def test_registered_types_with_details_methods() -> None:
    class CodedError(StatehubError):
        def __init__(self, message: str, code: int) -> None:
            super().__init__(message)
            self.code = code

        def wire_details(self) -> dict[str, object]:
            return {"code": self.code}

        @classmethod
        def from_wire_details(cls, message: str, details: dict[str, object]) -> CodedError:
            return cls(message, int(details["code"]))  # type: ignore[call-overload]

    register_error(CodedError, "FAILED_PRECONDITION")
    wire = error_to_wire(CodedError("bad", 301))
    assert wire == {
        "type": "CodedError",
        "message": "bad",
        "status": "FAILED_PRECONDITION",
        "details": {"code": 301},
    }
    back = error_from_wire(wire)
    assert isinstance(back, CodedError) and back.code == 301 and str(back) == "bad"


def test_register_error_refuses_unknown_status_names() -> None:
    with pytest.raises(ValueError, match="NOPE"):
        register_error(ValueError, "NOPE")
