"""docs/layers.md is drawn from the code: its diagram is the import-linter contract's
layers, in order, and its table names every module of every package."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from statehub.store.base import Store
from statehub.store.locks import LockTable
from statehub.store.state_dictionary import StateDictionary

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "statehub"
LAYERS_DOC = ROOT / "docs" / "layers.md"


def contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [str(layer) for layer in layers]


def diagram_layers(text: str) -> list[str]:
    """The first column of the diagram's rows (an indented line continues the row above)."""
    diagram = text.split("```text\n", 1)[1].split("```", 1)[0]
    rows = [line for line in diagram.splitlines() if line and not line[0].isspace()]
    return [re.split(r"\s{2,}", row, maxsplit=1)[0] for row in rows]


def documented_modules(text: str) -> dict[str, set[str]]:
    rows = re.findall(r"^\| (\w+) \| ([\w ·]+) \|$", text, flags=re.MULTILINE)
    header = ("package", "modules")
    return {
        package: set(modules.split(" · "))
        for package, modules in rows
        if (package, modules) != header
    }


def code_modules() -> dict[str, set[str]]:
    return {
        package.name: {module.stem for module in package.glob("*.py")} - {"__init__"}
        for package in PACKAGE.iterdir()
        if (package / "__init__.py").is_file()
    }


def test_the_diagram_shows_the_contract_layers_in_order() -> None:
    assert diagram_layers(LAYERS_DOC.read_text()) == contract_layers()


def test_the_table_names_every_module_of_every_package() -> None:
    expected = code_modules()
    documented = documented_modules(LAYERS_DOC.read_text())
    rows = "\n".join(
        f"| {package} | {' · '.join(sorted(modules))} |"
        for package, modules in sorted(expected.items())
    )
    assert documented == expected, f"docs/layers.md's table should read:\n{rows}"


def store_interface_section(text: str) -> str:
    return text.split("## The store interface\n", 1)[1].split("\n## ", 1)[0]


def test_the_store_interface_section_names_every_event_loop_call() -> None:
    """Each call the engine makes on the store, as the code has it: the lock table's
    methods, the state dictionary's and the store's ``submit_*`` forms."""
    calls = {name for name in vars(LockTable) if not name.startswith("_")}
    for interface in (StateDictionary, Store):
        calls |= {name for name in dir(interface) if name.startswith("submit_")}
    section = store_interface_section(LAYERS_DOC.read_text())
    named = set(re.findall(r"[`.](\w+)`", section))  # `name` or `Owner.name`
    missing = sorted(calls - named)
    assert not missing, f"docs/layers.md's store interface does not name {missing}"
