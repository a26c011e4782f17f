"""statehub installs like a package, as a user meets it after ``pip install statehub``.

The sdist and the wheel are built from this checkout; a wheel is built again from the sdist
with no npm on PATH (the sdist carries the built dashboard); the wheel goes into fresh
virtual environments whose other packages are resolved from the package index as a user's
would be. In the one without extras every command's ``--help`` works, ``statehub serve``
serves the dashboard at ``/`` and ``get``/``set`` talk to it, and a feature whose extra is
missing names the extra and exits 2. Momotor's and NanoVer's client packages resolve into
one environment with statehub (issue 18), each importing and serving.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from statehub.bench.fleet import stop

ROOT = Path(__file__).resolve().parents[1]
UV = str(Path(sys.executable).with_name("uv"))
INSTALL_TIMEOUT = 900  # a fresh machine downloads everything once; uv caches it after


def run(*command: str | Path, timeout: float = 120, **kwargs: object) -> str:
    """Run ``command``; its stdout, or a failure that shows what it printed."""
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and wheel of this checkout, and a wheel built from that sdist without npm."""
    if not (ROOT / "src/statehub/web/dashboard/app.js").is_file():
        pytest.fail("the dashboard is not built: run `make dashboard` (make test does)")
    out = tmp_path_factory.mktemp("dist")
    run(UV, "build", "--no-build-isolation", "--python", sys.executable, "--out-dir", out, ROOT)
    (sdist,) = out.glob("statehub-*.tar.gz")
    (wheel,) = out.glob("statehub-*.whl")
    again = tmp_path_factory.mktemp("wheel-from-sdist")
    no_npm = tmp_path_factory.mktemp("bin-without-npm")  # PATH with nothing on it
    run(
        UV,
        "build",
        "--wheel",
        "--no-build-isolation",
        "--python",
        sys.executable,
        "--out-dir",
        again,
        sdist,
        env={**os.environ, "PATH": str(no_npm)},
    )
    (wheel_from_sdist,) = again.glob("statehub-*.whl")
    return {"sdist": sdist, "wheel": wheel, "wheel_from_sdist": wheel_from_sdist}


def fresh_venv(directory: Path, *requirements: str | Path, python: str = sys.executable) -> Path:
    """A new virtual environment in ``directory`` with ``requirements`` resolved from the
    package index, as ``pip install`` would; its bin directory."""
    run(UV, "venv", "--quiet", "--python", python, directory)
    bin_dir = directory / "bin"
    run(
        UV,
        "pip",
        "install",
        "--quiet",
        "--python",
        bin_dir / "python",
        *requirements,
        timeout=INSTALL_TIMEOUT,
    )
    return bin_dir


@pytest.fixture(scope="module")
def plain_install(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install statehub`` (the wheel built from the sdist), no extras: its bin."""
    return fresh_venv(tmp_path_factory.mktemp("plain") / "venv", dist["wheel_from_sdist"])


def test_the_sdist_carries_the_built_dashboard_and_no_stray_files(dist: dict[str, Path]) -> None:
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert "src/statehub/web/dashboard/app.js" in names
    assert "src/statehub/web/dashboard/index.html" in names
    assert not {name for name in names if name.startswith(("frontend/node_modules", ".venv"))}


@pytest.mark.parametrize("which", ["wheel", "wheel_from_sdist"])
def test_each_wheel_ships_the_dashboard_and_the_typing_marker(
    dist: dict[str, Path], which: str
) -> None:
    with zipfile.ZipFile(dist[which]) as wheel:
        names = set(wheel.namelist())
    assert {
        "statehub/web/dashboard/app.js",
        "statehub/web/dashboard/index.html",
        "statehub/py.typed",
    } <= names


def test_every_command_s_help_works_without_any_extra(plain_install: Path) -> None:
    python = plain_install / "python"
    for missing in ("redis", "aio_pika", "pytest"):
        run(python, "-c", f"import importlib.util as u; assert u.find_spec({missing!r}) is None")
    assert "Usage: statehub" in run(plain_install / "statehub", "--help")
    bare = subprocess.run(
        [plain_install / "statehub"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Usage: statehub" in bare.stderr + bare.stdout, bare  # click exits 2: no command
    assert "Traceback" not in bare.stderr
    assert "fanout" in run(plain_install / "statehub", "bench", "--help")
    # Every command and subcommand, walked in the installed package itself.
    walk = (
        "import click, sys\n"
        "from click.testing import CliRunner\n"
        "from statehub.cli import main\n"
        "def walk(group, path):\n"
        "    context = click.Context(group)\n"
        "    for name in group.list_commands(context):\n"
        "        command = group.get_command(context, name)\n"
        "        yield [*path, name]\n"
        "        if isinstance(command, click.Group):\n"
        "            yield from walk(command, [*path, name])\n"
        "failed = []\n"
        "paths = list(walk(main, []))\n"
        "for path in paths:\n"
        "    result = CliRunner().invoke(main, [*path, '--help'])\n"
        "    if result.exit_code != 0 or 'Usage:' not in result.output:\n"
        "        failed.append((path, result.exit_code, repr(result.exception)))\n"
        "print(len(paths), failed)\n"
    )
    printed = run(python, "-c", walk)
    count, failed = printed.split(" ", 1)
    assert failed.strip() == "[]", failed
    assert int(count) >= 17


def start_serve(bin_dir: Path, *arguments: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``statehub serve --port 0`` from ``bin_dir``; the process and the addresses it printed."""
    process = subprocess.Popen(
        [str(bin_dir / "statehub"), "serve", "--port", "0", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    addresses: dict[str, str] = {}
    for _ in range(3):  # TCP, web edge, gRPC: one line each
        line = process.stdout.readline()
        if found := re.search(r"serving on (\S+)", line):
            addresses["tcp"] = found.group(1)
        elif found := re.search(r"web edge on (\S+)", line):
            addresses["web"] = found.group(1)
        elif found := re.search(r"gRPC on (\S+)", line):
            addresses["grpc"] = found.group(1)
    if len(addresses) != 3:
        stop(process)
        pytest.fail(f"statehub serve did not start: {addresses} {process.stderr.read()}")
    return process, addresses


@pytest.fixture
def served(plain_install: Path) -> Iterator[dict[str, str]]:
    process, addresses = start_serve(plain_install)
    try:
        yield addresses
    finally:
        stop(process)


def test_the_plain_install_serves_the_dashboard_and_answers_get_and_set(
    plain_install: Path, served: dict[str, str]
) -> None:
    with urllib.request.urlopen(served["web"], timeout=10) as response:
        assert response.status == 200
        assert "<html" in response.read().decode().lower()
    statehub = plain_install / "statehub"
    for address in (f"statehub+grpc://{served['grpc']}", f"statehub://{served['tcp']}"):
        environment = {**os.environ, "STATEHUB_URL": address}
        assert "revision" in run(statehub, "set", "greeting", '"hello"', env=environment)
        assert run(statehub, "get", "greeting", env=environment).strip() == '"hello"'


@pytest.mark.parametrize(
    ("arguments", "extra"),
    [
        (["serve", "--port", "0", "--store", "redis://127.0.0.1:1/0"], "redis"),
        (["dripline", "get", "--broker", "amqp://127.0.0.1:1/", "some.endpoint"], "dripline"),
        (["bench", "cluster"], "redis"),
    ],
)
def test_a_feature_whose_extra_is_missing_names_the_extra_and_exits_2(
    plain_install: Path, tmp_path: Path, arguments: list[str], extra: str
) -> None:
    result = subprocess.run(
        [str(plain_install / "statehub"), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"pip install 'statehub[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dripline_mesh_in_the_config_without_its_extra_exits_2(
    plain_install: Path, tmp_path: Path
) -> None:
    config = tmp_path / "endpoints.yaml"
    config.write_text("name: lab\nendpoints:\n  - name: temperature\n    initial_value: 1\n")
    result = subprocess.run(
        [
            str(plain_install / "statehub"),
            "serve",
            "--port",
            "0",
            "--config",
            str(config),
            "--dripline",
            "amqp://127.0.0.1:1/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "pip install 'statehub[dripline]'" in result.stderr


def serves_next_to(bin_dir: Path, import_check: str) -> None:
    """In ``bin_dir``'s environment: ``import_check`` runs, and statehub serves there."""
    run(bin_dir / "python", "-c", import_check)
    process, addresses = start_serve(bin_dir)
    try:
        environment = {**os.environ, "STATEHUB_URL": f"statehub://{addresses['tcp']}"}
        run(bin_dir / "statehub", "set", "shared", "1", env=environment)
        assert run(bin_dir / "statehub", "get", "shared", env=environment).strip() == "1"
    finally:
        stop(process)


def test_statehub_shares_an_environment_with_momotor_s_client_packages(
    dist: dict[str, Path], tmp_path: Path
) -> None:
    bin_dir = fresh_venv(tmp_path / "venv", dist["wheel"], "momotor-engine-proto")
    serves_next_to(
        bin_dir,
        "import google.protobuf, statehub, statehub.server.nanover_compat\n"
        "from momotor.rpc.proto import worker_grpc\n"
        "from momotor.rpc.shared import SharedState\n"
        "assert google.protobuf.__version__ < '7', google.protobuf.__version__\n",
    )


def python_313() -> str | None:
    """Python 3.13 as scripts/make-venv finds it: on PATH, else pyenv's copy."""
    candidates = [shutil.which("python3.13")]
    if pyenv := shutil.which("pyenv"):
        prefix = subprocess.run([pyenv, "prefix", "3.13"], capture_output=True, text=True)
        candidates.append(f"{prefix.stdout.strip()}/bin/python3.13")
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_statehub_shares_an_environment_with_nanover_on_python_3_13(
    dist: dict[str, Path], tmp_path: Path
) -> None:
    python = python_313()
    if python is None:
        pytest.fail("no Python 3.13 (make test installs it with pyenv)")
    bin_dir = fresh_venv(tmp_path / "venv", dist["wheel"], "nanover-server", python=python)
    serves_next_to(
        bin_dir,
        "import sys, statehub, statehub.server.nanover_compat\n"
        "import nanover.websocket.client.app_client\n"
        "assert sys.version_info[:2] == (3, 13)\n",
    )


def test_an_editable_install_of_a_checkout_builds_and_serves_the_dashboard(
    tmp_path: Path,
) -> None:
    """``pip install -e .`` in a checkout whose dashboard is not built yet (as after
    ``git clone``) builds it with npm, and ``/`` serves it (it answered 503)."""
    checkout = tmp_path / "checkout"
    tracked = run("git", "ls-files", "-z", cwd=ROOT).split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    assert not (checkout / "src/statehub/web/dashboard/app.js").exists()
    run(UV, "venv", "--quiet", "--python", sys.executable, tmp_path / "venv")
    bin_dir = tmp_path / "venv" / "bin"
    run(
        UV,
        "pip",
        "install",
        "--quiet",
        "--python",
        bin_dir / "python",
        "-e",
        checkout,
        timeout=INSTALL_TIMEOUT,
    )
    assert (checkout / "src/statehub/web/dashboard/app.js").is_file()
    process, addresses = start_serve(bin_dir)
    try:
        with urllib.request.urlopen(addresses["web"], timeout=10) as response:
            assert response.status == 200
            assert "<html" in response.read().decode().lower()
    finally:
        stop(process)
