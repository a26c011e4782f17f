"""``statehub serve --data`` on a directory that cannot be written: one line, exit 2.

Tests run as root, for whom permission bits do not stop a write; a read-only mount does.
It is made for real in a user and mount namespace of its own (``unshare -rm``: a tmpfs
remounted read-only), so the server meets the error it would meet on a read-only disk.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SERVE = [sys.executable, "-c", "from statehub.cli import main; main()", "serve", "--port", "0"]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def _assert_one_line_exit_2(result: subprocess.CompletedProcess[str], directory: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot use {directory} as the data directory" in lines[0]
    assert "statehub serving" not in result.stdout
    return lines[0]


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare -rm (user and mount namespaces)")
@pytest.mark.parametrize("holding", ["empty", "holding a data file"])
def test_a_read_only_data_directory_is_one_line_and_exit_2(tmp_path: Path, holding: str) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    data = mount / "data"
    fill = (
        f"{sys.executable} -c 'from statehub.store.sqlite import SQLiteStore; "
        f'SQLiteStore("{data}").close()\''
        if holding != "empty"
        else f"mkdir {data}"
    )
    serve = " ".join(SERVE[:2]) + f' "{SERVE[2]}" serve --port 0 --data {data}'
    script = (
        f"set -e; mount -t tmpfs none {mount}; {fill}; mount -o remount,ro {mount}; "
        f"touch {data}/x 2>/dev/null && exit 99; {serve}"
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 99, "the mount was writable: the test would prove nothing"
    line = _assert_one_line_exit_2(result, str(data))
    assert "Read-only file system" in line


def test_a_file_where_the_data_directory_should_be_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data = blocker / "data"
    result = subprocess.run(
        [*SERVE, "--data", str(data)], capture_output=True, text=True, timeout=60
    )
    assert "Not a directory" in _assert_one_line_exit_2(result, str(data))
    assert blocker.read_text() == "not a directory"
