"""Every code example in README.md and docs/*.md runs as a test (sybil).

- ```python blocks run in order, one namespace per document.
- ```console blocks run each ``$ command`` with bash and compare its output (stdout and
  stderr, trailing spaces ignored) with the lines under it; ``...`` in an expected line
  matches anything. A command whose expected output has an ``Error:`` line must fail.
- A ```yaml block whose first line is ``# NAME.yaml`` is written to that file, for the
  examples after it.
- ``<!-- skip: next -->`` before a block shows it without running it: only for examples
  that need what a test machine does not have (another host, its certificates, a broker).

Each document gets a fresh server on a free port, named by ``STATEHUB_URL`` (so
``Client()`` and ``statehub get`` find it, as they find ``make serve``'s), and runs in a
temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

BIN = str(Path(sys.executable).parent)
COMMAND_TIMEOUT = 60


def _setup(namespace: dict[str, Any]) -> None:
    from statehub import StateServer

    server = StateServer(address="127.0.0.1", port=0).start_in_thread()
    directory = tempfile.mkdtemp(prefix="statehub-docs-")
    namespace["__docs__"] = (server, os.environ.get("STATEHUB_URL"), os.getcwd(), directory)
    os.environ["STATEHUB_URL"] = f"statehub://127.0.0.1:{server.port}"
    os.chdir(directory)


def _teardown(namespace: dict[str, Any]) -> None:
    server, url, cwd, directory = namespace.pop("__docs__")
    os.chdir(cwd)
    if url is None:
        os.environ.pop("STATEHUB_URL", None)
    else:
        os.environ["STATEHUB_URL"] = url
    server.close()
    shutil.rmtree(directory, ignore_errors=True)


def _run_console(example: Example) -> str | None:
    commands: list[tuple[str, list[str]]] = []
    for line in str(example.parsed).splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line.rstrip())
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command, expected in commands:
        result = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            env=environment,
        )
        got = [line.rstrip() for line in (result.stdout + result.stderr).splitlines()]
        while expected and not expected[-1]:
            expected.pop()
        should_fail = any(line.startswith("Error:") for line in expected)
        if (result.returncode != 0) != should_fail:
            return f"$ {command}\nexit status {result.returncode}\n" + "\n".join(got)
        if expected and not _matches(expected, got):
            return f"$ {command}\nexpected:\n" + "\n".join(expected) + "\ngot:\n" + "\n".join(got)
    return None


def _matches(expected: list[str], got: list[str]) -> bool:
    if len(expected) != len(got):
        return False
    for want, line in zip(expected, got, strict=True):
        pattern = ".*".join(re.escape(part) for part in want.split("..."))
        if not re.fullmatch(pattern, line):
            return False
    return True


def _write_yaml(example: Example) -> None:
    text = str(example.parsed)
    match = re.match(r"# (\S+\.ya?ml)\n", text)
    if match:
        Path(match.group(1)).write_text(text)


pytest_collect_file = Sybil(
    parsers=[
        SkipParser(),
        PythonCodeBlockParser(),
        CodeBlockParser(language="console", evaluator=_run_console),
        CodeBlockParser(language="yaml", evaluator=_write_yaml),
    ],
    patterns=["README.md", "docs/*.md"],
    setup=_setup,
    teardown=_teardown,
).pytest()
