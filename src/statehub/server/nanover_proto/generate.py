"""Regenerate the protobuf modules from the .proto files next to this one.

No gRPC stubs are generated: `statehub.server.nanover_compat` serves the services at
NanoVer's paths itself (the proto package is statehub's own, see the .proto files).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    here = Path(__file__).resolve().parent
    source_root = here.parents[2]  # .../src, so imports read statehub.server.nanover_proto
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


if __name__ == "__main__":
    sys.exit(main())
