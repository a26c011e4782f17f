"""NanoVer's gRPC-era protocol: .proto files written for statehub and their generated code.

The ``*_pb2.py`` files are generated; regenerate them after changing a .proto with
``python -m statehub.server.nanover_proto.generate`` (needs grpcio-tools, a dev
dependency). The messages are in statehub's own proto package (``statehub.nanover_compat``)
so that NanoVer's generated modules, which register ``nanover.protocol.*`` in protobuf's
global descriptor pool, can be imported in the same process; only the service paths
travel on the wire, and ``statehub.server.nanover_compat`` serves NanoVer's. Importing
this package loads no protobuf code.
"""
