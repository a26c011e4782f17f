"""Regenerate the protobuf module from the .proto file next to this one.

No gRPC stubs are generated: ``statehub.server.momotor_compat`` serves the method at
Momotor's path itself (the proto package is statehub's own, see the .proto file).
"""

from __future__ import annotations

import sys
from pathlib import Path

from statehub.server.nanover_proto.generate import generate


def main() -> int:
    return generate(Path(__file__).resolve().parent)


if __name__ == "__main__":
    sys.exit(main())
