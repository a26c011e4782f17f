from __future__ import annotations

import pytest

from statehub import StatehubError
from statehub.endpoints.return_codes import (
    AccessDeniedError,
    EndpointError,
    InvalidLockoutKeyError,
    InvalidSpecifierError,
    InvalidValueError,
    ServiceError,
    define_return_code,
    error_class_for,
    known_return_codes,
)
from statehub.protocol.errors import error_from_wire, error_to_wire, status_of


def test_dripline_codes_and_names() -> None:
    codes = known_return_codes()
    assert codes[304] == "invalid value"
    assert codes[307] == "access denied"
    assert codes[308] == "invalid lockout key"
    assert codes[310] == "invalid specifier"
    assert codes[999] == "unhandled exception"
    assert {0, 309} & set(codes) == set()  # success is no error; 309 is not a v3 code
    for code in codes:
        assert error_class_for(code).code == code  # type: ignore[union-attr]


def test_hierarchy() -> None:
    error = AccessDeniedError("peaches is locked")
    assert isinstance(error, ServiceError)
    assert isinstance(error, EndpointError)
    assert isinstance(error, StatehubError)
    assert (error.code, error.code_name, error.reason) == (
        307,
        "access denied",
        "peaches is locked",
    )
    assert str(error) == "307 access denied: peaches is locked"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (AccessDeniedError("x"), "PERMISSION_DENIED"),
        (InvalidValueError("x"), "INVALID_ARGUMENT"),
        (InvalidSpecifierError("x"), "NOT_FOUND"),
        (InvalidLockoutKeyError("x"), "INVALID_ARGUMENT"),
    ],
)
def test_errors_keep_type_message_and_code_over_the_wire(error: EndpointError, status: str) -> None:
    wire = error_to_wire(error)
    assert wire["status"] == status == status_of(error)
    assert wire["details"]["code"] == error.code
    back = error_from_wire(wire)
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert isinstance(back, EndpointError) and back.code == error.code


def test_application_codes() -> None:
    saturated = define_return_code(1001, "sensor saturated", "SensorSaturatedTestError")
    error = saturated("the diode reads its maximum")
    assert (error.code, error.code_name) == (1001, "sensor saturated")
    assert isinstance(error, EndpointError)
    back = error_from_wire(error_to_wire(error))
    assert type(back) is saturated and str(back) == str(error)
    with pytest.raises(ValueError, match="already registered"):
        define_return_code(1001, "again", "OtherTestError")
    with pytest.raises(ValueError, match="already registered"):
        define_return_code(1002, "again", "SensorSaturatedTestError")
    with pytest.raises(ValueError, match=">= 1000"):
        define_return_code(999, "too low", "TooLowTestError")


def test_an_unknown_application_code_keeps_its_code_on_the_base_class() -> None:
    wire = {
        "type": "EndpointError",
        "message": "1234 custom: x",
        "status": "UNKNOWN",
        "details": {"code": 1234, "code_name": "custom", "reason": "x"},
    }
    back = error_from_wire(wire)
    assert isinstance(back, EndpointError)
    assert (back.code, back.code_name, str(back)) == (1234, "custom", "1234 custom: x")
