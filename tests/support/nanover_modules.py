"""NanoVer-shaped generated modules, made for the tests from statehub's .proto files.

NanoVer ships ``nanover.protocol.state`` and ``nanover.protocol.command``, generated from
.proto files in the ``nanover.protocol.*`` proto packages: importing them registers those
names in protobuf's global descriptor pool. ``generate(root)`` writes the same kind of
modules under ``root`` (statehub's .proto files with NanoVer's package names), so tests
can load them next to statehub, as a process migrating from NanoVer does, and use their
stubs as a NanoVer client.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from grpc_tools import protoc

import statehub.server.nanover_proto as statehub_protos

PROTOS = {"state": "state_service", "command": "command_service"}


def generate(root: Path) -> None:
    """Write the ``nanover.protocol.{state,command}`` packages under ``root``."""
    source = Path(statehub_protos.__file__).parent
    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    for package in ("nanover", "nanover/protocol"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for package, name in PROTOS.items():
        directory = root / "nanover" / "protocol" / package
        directory.mkdir(exist_ok=True)
        text = (source / f"{name}.proto").read_text()
        ours = f"package statehub.nanover_compat.{package};"
        assert ours in text, f"{name}.proto no longer declares {ours}"
        (directory / f"{name}.proto").write_text(
            text.replace(ours, f"package nanover.protocol.{package};")
        )
        relative = f"nanover/protocol/{package}/{name}.proto"
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{include}",
                f"--python_out={root}",
                f"--grpc_python_out={root}",
                relative,
            ]
        )
        assert status == 0, f"protoc failed on {relative}"
        # As NanoVer's packages do: the messages and stubs at the package level.
        (directory / "__init__.py").write_text(
            f"from .{name}_pb2 import *\nfrom .{name}_pb2_grpc import *\n"
        )


def on_path() -> Path:
    """Generate the modules once per process into a temporary directory on ``sys.path``."""
    root = Path(tempfile.mkdtemp(prefix="nanover-modules-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate(root)
    sys.path.insert(0, str(root))
    return root


ROOT = on_path()


def load() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """NanoVer's generated modules: state messages, state stubs, command messages, stubs."""
    return (
        importlib.import_module("nanover.protocol.state.state_service_pb2"),
        importlib.import_module("nanover.protocol.state.state_service_pb2_grpc"),
        importlib.import_module("nanover.protocol.command.command_service_pb2"),
        importlib.import_module("nanover.protocol.command.command_service_pb2_grpc"),
    )
