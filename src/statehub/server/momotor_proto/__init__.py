"""Momotor's shared-lock RPC: a .proto file written for statehub and its generated code.

The ``*_pb2.py`` files are generated; regenerate them after changing the .proto with
``python -m statehub.server.momotor_proto.generate`` (needs grpcio-tools, a dev
dependency). The messages are in statehub's own proto package (``statehub.momotor_compat``)
so that Momotor's generated modules, which register ``momotor.rpc.proto.*`` in protobuf's
global descriptor pool, can be imported in the same process; only the service path
travels on the wire, and ``statehub.server.momotor_compat`` serves Momotor's. Importing
this package loads no protobuf code.
"""
