"""docs/api.md documents every name ``statehub`` exports, where it is defined."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import statehub

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def documented_paths() -> set[str]:
    return set(re.findall(r"^::: ([\w.]+)$", API_DOC.read_text(), flags=re.MULTILINE))


def definition_path(name: str) -> str:
    """``module.Name`` where ``name`` is defined (a type alias: the module that exports it)."""
    value = getattr(statehub, name)
    module = getattr(value, "__module__", None)
    if not (isinstance(module, str) and module.startswith("statehub.")):
        module = statehub._LAZY[name]  # JsonValue: a union, whose __module__ is 'types'
    return f"{module}.{name}"


def test_every_exported_name_is_documented() -> None:
    documented = documented_paths()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # __all__ holds no deprecated name
        wanted = {definition_path(name) for name in statehub.__all__ if name != "__version__"}
    missing = sorted(
        path
        for path in wanted
        if path not in documented and path.rpartition(".")[0] not in documented
    )
    assert not missing, f"add to docs/api.md: {', '.join('::: ' + path for path in missing)}"
