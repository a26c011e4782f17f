from __future__ import annotations

import math

import pytest

from statehub.endpoints.calibration import (
    Calibration,
    ExpressionCalibration,
    MappingCalibration,
    calibration_functions,
    register_calibration_function,
)
from statehub.endpoints.return_codes import InvalidValueError


def test_format_string_is_evaluated() -> None:
    assert ExpressionCalibration("2*{}")(0.75) == 1.5
    assert ExpressionCalibration("{} + {0} * 2")(1) == 3
    assert ExpressionCalibration("times2({})")(4) == 8
    assert ExpressionCalibration("times3({}) - 1")(2) == 5
    assert ExpressionCalibration("round(sqrt({}), 2)")(2) == 1.41
    assert type(ExpressionCalibration("{} * 2")(3)) is int


def test_mapping_calibration() -> None:
    calibration = MappingCalibration({"CLOSE": "on", "OPEN": "off", 1: [1, 2]})
    assert calibration("CLOSE") == "on"
    assert calibration(1) == [1, 2]


@pytest.mark.parametrize("spec", ["2*{}", {"CLOSE": "on"}])
def test_none_stays_none(spec: object) -> None:
    calibration = Calibration.from_config(spec)
    assert calibration is not None
    assert calibration(None) is None


def test_no_calibration() -> None:
    assert Calibration.from_config(None) is None


@pytest.mark.parametrize("raw", ["HALF", 3, [1], {"a": 1}, True])
def test_a_mapping_miss_is_an_invalid_value(raw: object) -> None:
    calibration = MappingCalibration({"CLOSE": "on", "OPEN": "off"})
    with pytest.raises(InvalidValueError) as caught:
        calibration(raw)  # type: ignore[arg-type]
    assert caught.value.code == 304
    assert repr(raw) in str(caught.value)


@pytest.mark.parametrize(
    ("template", "raw"),
    [("1/{}", 0), ("{} - 1", [1, None]), ("{} + 1", "text"), ("log({})", -1), ("10**{}", 10**9)],
)
def test_an_evaluation_error_is_an_invalid_value(template: str, raw: object) -> None:
    with pytest.raises(InvalidValueError, match=r"^304 invalid value: calibration"):
        ExpressionCalibration(template)(raw)  # type: ignore[arg-type]


def test_a_string_raw_value_is_data_not_code() -> None:
    """The raw value is bound as a name, never pasted into the expression."""
    sneaky = "__import__('os').system('false')"
    assert ExpressionCalibration("{}")(sneaky) == sneaky
    assert ExpressionCalibration("str({}) * 2")("ab") == "abab"


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("2*{} +", "does not parse"),
        ("os.system({})", "only named functions"),
        ("{}.__class__", "attribute access"),
        ("open({})", "unknown function 'open'"),
        ("eval({})", "unknown function 'eval'"),
        ("x * {}", "unknown name 'x'"),
        ("{name}", "only '{}'"),
        ("{:.2f}", "only '{}'"),
        ("{", "not a valid format string"),
        ("", "empty"),
        ("x = {}", "not an expression"),
    ],
)
def test_bad_expressions_are_refused_when_loaded(template: str, words: str) -> None:
    with pytest.raises(ValueError, match="calibration") as caught:
        ExpressionCalibration(template)
    assert words in str(caught.value)


def test_registered_functions_can_be_called() -> None:
    register_calibration_function("celsius_from_kelvin_for_test", lambda k: k - 273.15)
    assert math.isclose(ExpressionCalibration("celsius_from_kelvin_for_test({})")(300), 26.85)
    with pytest.raises(ValueError, match="already registered"):
        register_calibration_function("celsius_from_kelvin_for_test", abs)
    for bad in ("raw", "None", "_private", "not a name"):
        with pytest.raises(ValueError):
            register_calibration_function(bad, abs)
    assert {"times2", "times3"} <= set(calibration_functions())


def test_a_result_that_is_not_json_like_is_an_invalid_value() -> None:
    register_calibration_function("as_complex_for_test", complex)
    with pytest.raises(InvalidValueError, match="not a JSON-like value"):
        ExpressionCalibration("as_complex_for_test({})")(1)


def test_a_result_over_the_value_limits_is_an_invalid_value() -> None:
    with pytest.raises(InvalidValueError, match="no protocol can carry") as big:
        ExpressionCalibration("2*{}")(2**1023 - 1)
    assert "an int of 1024 bits is over the limit of 1023 bits" in str(big.value)

    def nest_in_lists(value: object) -> object:
        for _ in range(40):
            value = [value]
        return value

    register_calibration_function("nest_in_lists_for_test", nest_in_lists)
    with pytest.raises(InvalidValueError, match="no protocol can carry") as deep:
        ExpressionCalibration("nest_in_lists_for_test({})")(1)
    assert "over the limit of 32" in str(deep.value)
