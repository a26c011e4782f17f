"""Regenerate the protobuf modules from the .proto files next to this one.

No gRPC stubs are generated: `statehub.server.nanover_compat` serves the services at
NanoVer's paths itself (the proto package is statehub's own, see the .proto files).
``generate`` serves ``momotor_proto`` too.
"""

from __future__ import annotations

import sys
from pathlib import Path


def generate(here: Path) -> int:
    """Run protoc on the .proto files in ``here`` (a package under ``src/statehub``)."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    source_root = here.parents[2]  # .../src, so imports read statehub.server.<package>
    protos = sorted(str(path.relative_to(source_root)) for path in here.glob("*.proto"))
    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    return protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{source_root}",
            f"-I{include}",
            f"--python_out={source_root}",
            f"--pyi_out={source_root}",
            *protos,
        ]
    )


def main() -> int:
    return generate(Path(__file__).resolve().parent)


if __name__ == "__main__":
    sys.exit(main())
