"""NanoVer's real client from PyPI, run against ``statehub serve`` processes.

``nanover-server`` (the client, the ``--remote`` simulation runner and ``nanover-record``)
needs Python >= 3.13, so it lives in a virtualenv of its own, made once and cached under
``~/.cache/statehub-tests/nanover-venv-<version>`` (``uv venv`` + ``uv pip install``; a file
lock serialises test runs that would make it at the same time). Tests run the client in
child processes: small scripts run by that interpreter that print one JSON line with what
they saw. Tests are skipped when no Python 3.13 or no ``uv`` is at hand.

Nothing here starts NanoVer's own server: it broadcasts discovery on every interface.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: The release of NanoVer's client these tests are written against.
NANOVER_VERSION = "0.1.3018"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "statehub-tests"
NANOVER_REQUIREMENT = f"nanover-server=={NANOVER_VERSION}"
VENV = CACHE / f"nanover-venv-{NANOVER_VERSION}"
#: Seconds allowed to make the virtualenv (downloads OpenMM, MDAnalysis and more).
INSTALL_TIMEOUT = 900
SRC = Path(__file__).resolve().parents[2] / "src"


def _python313() -> str | None:
    candidates = [os.environ.get("STATEHUB_PYTHON313")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        found = subprocess.run(
            [pyenv, "prefix", "3.13"], capture_output=True, text=True, timeout=30
        )
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(str(Path(found.stdout.strip().splitlines()[-1]) / "bin/python3.13"))
    candidates.append(shutil.which("python3.13"))
    for candidate in candidates:
        if candidate and _runs_313(candidate):
            return candidate
    return None


def _runs_313(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 13))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return False
    return done.stdout.strip() == "True"


def _uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv")


def nanover_python() -> Path:
    """The interpreter of the virtualenv with ``nanover-server`` installed (made once)."""
    python = VENV / "bin" / "python"
    ready = VENV / ".statehub-ready"
    if ready.exists():
        return python
    base, uv = _python313(), _uv()
    if base is None or uv is None:
        pytest.skip("NanoVer's client needs Python 3.13 and uv to make its virtualenv")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"nanover-venv-{NANOVER_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be making it: wait for it
        if not ready.exists():
            subprocess.run(
                [uv, "venv", "--quiet", "--clear", "--python", base, str(VENV)],
                check=True,
                timeout=INSTALL_TIMEOUT,
            )
            subprocess.run(
                [uv, "pip", "install", "--quiet", "--python", str(python), NANOVER_REQUIREMENT],
                check=True,
                timeout=INSTALL_TIMEOUT,
            )
            ready.write_text(NANOVER_VERSION)
    return python


#: The directory holding this package, for NanoVer's interpreter to import its poll helper.
TESTS = Path(__file__).resolve().parents[1]
#: Put before every client script: the tests' one poll helper (``eventually_sync``, from
#: the standard library only) and a way to report.
PRELUDE = textwrap.dedent(
    f"""
    import json, sys, time
    sys.path.insert(0, {str(TESTS)!r})
    from support.polling import eventually_sync
    ARGS = json.loads(sys.argv[1])

    def report(value):
        print("RESULT " + json.dumps(value), flush=True)
    """
)


def run_client(script: str, args: dict[str, Any], *, timeout: float = 120) -> Any:
    """Run ``script`` (after ``PRELUDE``) with NanoVer's interpreter; what it ``report``ed."""
    python = nanover_python()
    try:
        done = subprocess.run(
            [str(python), "-c", PRELUDE + textwrap.dedent(script), json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"NanoVer client script timed out after {timeout} s: {error.stderr!r}")
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        pytest.fail(
            f"NanoVer client script failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return json.loads(results[-1][len("RESULT ") :])


@contextmanager
def background(command: list[str], **options: Any) -> Iterator[subprocess.Popen[str]]:
    """A child process for the duration; stopped by its pid (SIGINT, then SIGKILL)."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options
    )
    try:
        yield process
    finally:
        stop(process, signal.SIGINT)


def stop(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[str, str]:
    """End ``process`` (``signum``, then SIGKILL after 15 s); what it wrote."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return out or "", err or ""


@dataclass
class Statehub:
    """A ``statehub serve`` process: its ports, and how a NanoVer client reaches it."""

    process: subprocess.Popen[str]
    grpc_port: int
    web_port: int
    lines: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}"


@contextmanager
def statehub_serve(*arguments: str) -> Iterator[Statehub]:
    """``statehub serve --port 0`` on 127.0.0.1 with ``arguments``, stopped by its pid."""
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    serve = [sys.executable, "-c", "from statehub.cli import main; main()", "serve"]
    process = subprocess.Popen(
        [*serve, "--host", "127.0.0.1", "--port", "0", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    lines: list[str] = []
    ports: dict[str, int] = {}
    for _ in range(3):  # "serving on ..." (TCP), "web edge on ...", "gRPC on ..."
        line = process.stdout.readline()
        lines.append(line)
        if found := re.search(r"gRPC on [0-9.]+:(\d+)", line):
            ports["grpc"] = int(found.group(1))
        elif found := re.search(r"web edge on http://[0-9.]+:(\d+)", line):
            ports["web"] = int(found.group(1))
    if len(ports) != 2:
        out, err = stop(process)
        pytest.fail(f"statehub serve did not start: {lines} {out} {err}")
    try:
        yield Statehub(process, ports["grpc"], ports["web"], lines)
    finally:
        stop(process)


#: Writes an OpenMM simulation of ``atoms`` argon atoms (a chain with harmonic bonds)
#: as NanoVer's XML, for ``nanover-server --omm``.
SIMULATION_XML = """
import openmm, openmm.app as app, openmm.unit as unit
from nanover.openmm import serializer
atoms = ARGS["atoms"]
topology = app.Topology()
chain = topology.addChain()
system = openmm.System()
bonds = openmm.HarmonicBondForce()
positions = []
previous = None
for index in range(atoms):
    residue = topology.addResidue("AR", chain)
    atom = topology.addAtom("AR", app.Element.getBySymbol("Ar"), residue)
    system.addParticle(39.9)
    positions.append(openmm.Vec3((index % 25) * 0.4, (index // 25 % 25) * 0.4, index // 625 * 0.4))
    if previous is not None and index % 25:
        topology.addBond(previous, atom)
        bonds.addBond(index - 1, index, 0.4, 100.0)
    previous = atom
system.addForce(bonds)
integrator = openmm.LangevinIntegrator(
    300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds
)
platform = openmm.Platform.getPlatformByName("Reference" if atoms < 100 else "CPU")
simulation = app.Simulation(topology, system, integrator, platform)
simulation.context.setPositions(positions * unit.nanometer)
with open(ARGS["path"], "w") as out:
    out.write(serializer.serialize_simulation(simulation))
report({"written": ARGS["path"]})
"""


def simulation_xml(path: Path, atoms: int) -> Path:
    run_client(SIMULATION_XML, {"path": str(path), "atoms": atoms})
    return path


@contextmanager
def remote_runner(
    url: str, *simulation: Path, playback: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``nanover-server --remote URL --omm FILE... [--playback RECORDING]``: a simulation
    runner as a client of ``url``."""
    command = [str(nanover_python().parent / "nanover-server"), "--remote", url]
    for path in simulation:
        command += ["--omm", str(path)]
    if playback is not None:
        command += ["--playback", str(playback)]
    with background(command) as process:
        yield process
