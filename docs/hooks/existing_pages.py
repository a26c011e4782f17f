"""MkDocs hook: drop navigation entries whose page does not exist (yet) in docs/.

Several branches add pages; the navigation names them all, and a page not merged yet is
left out instead of failing the strict build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    config["nav"] = _existing(config["nav"], docs)
    return config


def _existing(entries: list[Any], docs: Path) -> list[Any]:
    kept: list[Any] = []
    for entry in entries:
        if isinstance(entry, dict):
            ((title, target),) = entry.items()
            if isinstance(target, list):
                children = _existing(target, docs)
                if children:
                    kept.append({title: children})
            elif "://" in target or (docs / target).is_file():
                kept.append(entry)
        elif "://" in entry or (docs / entry).is_file():
            kept.append(entry)
    return kept
