"""Calibration: turning an endpoint's raw value into its calibrated value.

Two forms, as in dripline:

- a format string with ``{}`` where the raw value goes (``"2*{}"``, ``"times3({}) + 1"``),
  evaluated by ``simpleeval`` (never ``eval``): the raw value is passed as a *name*, never
  pasted into the text, so a string value cannot inject code. Only registered functions
  may be called (``times2``, ``times3`` and a few maths helpers are built in; add more with
  ``register_calibration_function``);
- a mapping from raw values to calibrated ones (``{CLOSE: "on", OPEN: "off"}``).

A raw ``None`` calibrates to ``None``. A mapping miss or a failed evaluation raises
``InvalidValueError`` (dripline code 304). Expressions are checked when the configuration
is loaded, so a calibration that does not parse stops start-up instead of the first get.
"""

from __future__ import annotations

import ast
import math
import string
import threading
from collections.abc import Callable, Mapping
from typing import Any

from simpleeval import SimpleEval  # type: ignore[import-untyped]

from statehub.core.limits import describe
from statehub.core.values import JsonValue, checked_copy
from statehub.endpoints.return_codes import InvalidValueError

#: The name the raw value is bound to inside a compiled expression.
RAW_NAME = "raw"

_CONSTANTS = {"True": True, "False": False, "None": None, "pi": math.pi, "e": math.e}


def times2(value: Any) -> Any:
    """Twice the value (a built-in calibration helper, from dragonfly's kv_store)."""
    return 2 * value


def times3(value: Any) -> Any:
    """Three times the value (a built-in calibration helper, from dragonfly's kv_store)."""
    return 3 * value


_functions_lock = threading.Lock()
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "times2": times2,
    "times3": times3,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "str": str,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
}


def register_calibration_function(name: str, function: Callable[..., Any]) -> None:
    """Let calibration expressions call ``function`` as ``name``.

    Register before loading the configuration that uses it. ``ValueError`` if the name is
    taken, reserved, or not an identifier.
    """
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"calibration function name must be an identifier, got {name!r}")
    if name == RAW_NAME or name in _CONSTANTS:
        raise ValueError(f"calibration function name {name!r} is reserved")
    if not callable(function):
        raise TypeError(f"calibration function {name!r} is not callable")
    with _functions_lock:
        if name in _FUNCTIONS:
            raise ValueError(f"calibration function {name!r} is already registered")
        _FUNCTIONS[name] = function


def calibration_functions() -> dict[str, Callable[..., Any]]:
    """A copy of the registered calibration functions by name."""
    with _functions_lock:
        return dict(_FUNCTIONS)


class Calibration:
    """Turns raw values into calibrated ones; build with ``Calibration.from_config``."""

    def __call__(self, raw: JsonValue) -> JsonValue:
        raise NotImplementedError

    def describe(self) -> JsonValue:
        """The calibration as it was configured (for ``get`` with a specifier)."""
        raise NotImplementedError

    @staticmethod
    def from_config(spec: object) -> Calibration | None:
        """A calibration from its configured form: None, a format string or a mapping.

        ``ValueError`` (with a message fit for a configuration error) if it cannot work.
        """
        if spec is None:
            return None
        if isinstance(spec, str):
            return ExpressionCalibration(spec)
        if isinstance(spec, Mapping):
            return MappingCalibration(spec)
        raise ValueError(
            f"calibration must be a format string or a mapping, got {type(spec).__name__}"
        )


class ExpressionCalibration(Calibration):
    """A format string evaluated safely, with the raw value where ``{}`` stands."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.expression = _template_to_expression(template)
        try:
            self._tree = SimpleEval.parse(self.expression)
        except SyntaxError as error:
            raise ValueError(f"calibration {template!r} does not parse: {error.msg}") from None
        if not isinstance(self._tree, ast.Expr):
            raise ValueError(f"calibration {template!r} is not an expression")
        self.function_names = _check_names(template, self._tree)

    def __call__(self, raw: JsonValue) -> JsonValue:
        if raw is None:
            return None
        functions = calibration_functions()
        evaluator = SimpleEval(
            functions={name: functions[name] for name in self.function_names},
            names={**_CONSTANTS, RAW_NAME: raw},
        )
        try:
            result = evaluator.eval(self.expression, previously_parsed=self._tree)
        except Exception as error:
            raise InvalidValueError(
                f"calibration {self.template!r} failed for raw value {describe(raw)}: "
                f"{type(error).__name__}: {error}"
            ) from None
        try:
            return checked_copy(result, "value_cal")
        except TypeError:
            raise InvalidValueError(
                f"calibration {self.template!r} of raw value {describe(raw)} gave "
                f"{type(result).__name__}, not a JSON-like value"
            ) from None
        except ValueError as error:  # over a limit of docs/limits.md: no reader could get it
            raise InvalidValueError(
                f"calibration {self.template!r} of raw value {describe(raw)} gave a value "
                f"no protocol can carry ({error})"
            ) from None

    def describe(self) -> JsonValue:
        return self.template


class MappingCalibration(Calibration):
    """A table from raw values to calibrated ones; a miss is an invalid value."""

    def __init__(self, table: Mapping[Any, Any]) -> None:
        self.table: dict[Any, JsonValue] = {}
        for raw, calibrated in table.items():
            if raw is not None and type(raw) not in (bool, int, float, str):
                raise ValueError(
                    f"calibration mapping keys must be scalars, got {type(raw).__name__} {raw!r}"
                )
            try:
                self.table[raw] = checked_copy(calibrated, f"calibration[{raw!r}]")
            except TypeError as error:
                raise ValueError(str(error)) from None

    def __call__(self, raw: JsonValue) -> JsonValue:
        if raw is None:
            return None
        try:
            found = raw in self.table
        except TypeError:  # a list or dict raw value cannot be a key
            found = False
        if not found:
            known = ", ".join(repr(key) for key in self.table)
            raise InvalidValueError(
                f"raw value {raw!r} is not in the calibration mapping (known: {known})"
            )
        return self.table[raw]

    def describe(self) -> JsonValue:
        if all(isinstance(key, str) for key in self.table):
            return dict(self.table)
        return [[key, value] for key, value in self.table.items()]


def _template_to_expression(template: str) -> str:
    """``"2*{}"`` -> ``"2*raw"``; only ``{}`` and ``{0}`` are fields, ``{{`` is a brace."""
    parts: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(
            f"calibration {template!r} is not a valid format string: {error}"
        ) from None
    for literal, field, spec, conversion in parsed:
        parts.append(literal)
        if field is None:
            continue
        if field not in ("", "0") or spec or conversion:
            raise ValueError(
                f"calibration {template!r}: only '{{}}' may stand for the raw value, "
                f"got '{{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}'"
            )
        parts.append(f"({RAW_NAME})")
    expression = "".join(parts).strip()
    if not expression:
        raise ValueError("calibration is an empty expression")
    return expression


def _check_names(template: str, tree: ast.AST) -> frozenset[str]:
    """The functions the expression calls; ``ValueError`` for an unknown name."""
    functions = calibration_functions()
    called: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ValueError(f"calibration {template!r}: only named functions may be called")
            if node.func.id not in functions:
                known = ", ".join(sorted(functions))
                raise ValueError(
                    f"calibration {template!r}: unknown function {node.func.id!r} "
                    f"(registered: {known})"
                )
            called.add(node.func.id)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in functions and node.id not in _CONSTANTS and node.id != RAW_NAME:
                raise ValueError(
                    f"calibration {template!r}: unknown name {node.id!r} "
                    "(use '{}' for the raw value)"
                )
        elif isinstance(node, ast.Attribute):
            raise ValueError(f"calibration {template!r}: attribute access is not allowed")
    return frozenset(called)
