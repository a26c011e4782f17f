"""The clients' public API is documented and precisely typed: mypy --strict catches misuse."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from statehub import AsyncClient, Client, JsonValue

MYPY = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary"]
SNIPPET = """
from statehub import AsyncClient, Client


def blocking(client: Client) -> int:
    client.set("ok", {"a": [1, 2.5, None]})
    assert client.get("ok") is not None
    return client.set("x", object())  # error expected: not a JSON-like value


async def non_blocking(client: AsyncClient) -> None:
    await client.update({"n": 1}, ["gone"])
    await client.run_command("add", a=1, b=object())  # error expected
"""


def _public_methods(cls: type) -> list[tuple[str, typing.Any]]:
    found = []
    for name, member in inspect.getmembers(cls):
        function = member.fget if isinstance(member, property) else member
        if not name.startswith("_") and callable(function):
            found.append((name, function))
    return found


@pytest.mark.parametrize("cls", [AsyncClient, Client])
def test_every_public_method_has_a_docstring_and_no_bare_any(cls: type) -> None:
    json_value = repr(JsonValue)
    for name, function in _public_methods(cls):
        assert inspect.getdoc(function), f"{cls.__name__}.{name} has no docstring"
        for parameter, hint in typing.get_type_hints(function).items():
            text = repr(hint).replace(json_value, "JsonValue")
            assert "Any" not in text, f"{cls.__name__}.{name}: {parameter} is {text}"


def test_mypy_strict_catches_values_that_are_not_json(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    result = subprocess.run(
        [*MYPY, "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    expected = [
        str(number)
        for number, line in enumerate(SNIPPET.splitlines(), 1)
        if "error expected" in line
    ]
    assert [line.split(":")[1] for line in errors] == expected, result.stdout
    assert 'Argument 2 to "set" of "Client" has incompatible type "object"' in errors[0]
    assert 'Argument "b" to "run_command" of "AsyncClient"' in errors[1]
