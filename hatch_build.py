"""Builds the dashboard into the package before a wheel is built, if it is not built yet.

The built files are not in git (``make dashboard`` builds them for a checkout); a wheel
built from a fresh checkout needs them, so this runs the same npm build (node and npm
must be installed; an sdist carries the built files, so a wheel built from it needs
neither). An editable install (``pip install -e .``) builds them too when npm is there;
without npm it goes on, and the web edge's ``/`` says how to build them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class DashboardBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        if (root / "src/statehub/web/dashboard/app.js").is_file():
            return
        npm = shutil.which("npm")
        if npm is None and version == "editable":
            return
        if npm is None:
            raise RuntimeError(
                "the dashboard is not built and npm is not installed: run `make dashboard` "
                "where node and npm are, then build the wheel"
            )
        frontend = root / "frontend"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=frontend, check=True)
        subprocess.run([npm, "run", "build"], cwd=frontend, check=True)
