"""Benchmark results as a table with the machine they were measured on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Result:
    workload: str
    figure: float
    unit: str


def machine() -> str:
    """One line naming the machine: CPU count, Python, OS."""
    return (
        f"{os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}"
    )


def format_table(title: str, results: list[Result]) -> str:
    """A Markdown table, ready to paste into the README."""
    width = max([len("workload"), *(len(r.workload) for r in results)])
    lines = [
        f"{title} ({machine()})",
        "",
        f"| {'workload'.ljust(width)} | {'figure':>14} | unit |",
        f"|{'-' * (width + 2)}|{'-' * 16}|------|",
    ]
    lines += [
        f"| {r.workload.ljust(width)} | {_format_figure(r.figure):>14} | {r.unit} |"
        for r in results
    ]
    return "\n".join(lines)


def _format_figure(figure: float) -> str:
    return f"{figure:,.0f}" if figure >= 100 else f"{figure:,.3g}"
