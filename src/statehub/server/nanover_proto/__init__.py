"""NanoVer's gRPC-era protocol: .proto files written for statehub and their generated code.

The ``*_pb2*.py`` files are generated; regenerate them after changing a .proto with
``python -m statehub.server.nanover_proto.generate`` (needs grpcio-tools, a dev
dependency). The proto packages keep NanoVer's names (``nanover.protocol.state``,
``nanover.protocol.command``) so NanoVer clients reach these services unchanged.
"""
