"""Generators of hostile input: session-protocol frames and NanoVer requests.

Seeded, so a failure can be replayed. Most frames are well-formed batches whose messages
are wrong in every way a client can get them wrong (unknown ops, wrong types, numbers
out of any range, values nested too deep, ids missing or reused); some are not
decodable at all, which ends their stream.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from google.protobuf import struct_pb2

from statehub.protocol.codec import BIG_INT_EXT
from statehub.server.nanover_proto import command_service_pb2, state_service_pb2

OPS = [
    "hello", "get", "update", "leases", "list_leases", "subscribe", "unsubscribe", "lock",
    "unlock", "test_lock", "call", "commands", "ping", "cancel", "nonsense", "",
]  # fmt: skip
ARGUMENT_NAMES = [
    "keys", "updates", "removals", "acquire", "release", "interval", "prefix", "since",
    "sub", "key", "exclusive", "timeout", "owner", "name", "arguments", "request", "token",
    "client", "epoch",
]  # fmt: skip


class BigInt:
    """An int outside the 64-bit range, as the codec's ext type carries it (any digits)."""

    def __init__(self, digits: str) -> None:
        self.digits = digits


def _default(value: object) -> object:
    if isinstance(value, BigInt):
        return msgpack.ExtType(BIG_INT_EXT, value.digits.encode())
    raise TypeError(type(value))


def hostile_scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            0,
            -1,
            2**63 - 1,
            -(2**63),
            BigInt(str(2**1100)),
            BigInt(str(-(2**200))),
            float("nan"),
            float("inf"),
            -1e308,
            "",
            "k",
            "é" * 50,
            "x" * 10_000,
            b"\x00bytes",
            rng.random(),
            rng.randrange(-1000, 1000),
        ]
    )


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 60 or roll < 0.55:
        return hostile_scalar(rng)
    if roll < 0.7:  # a deep chain, past every protocol's nesting limit
        value: Any = hostile_scalar(rng)
        for _ in range(rng.choice([10, 31, 33, 40, 200, 600])):
            value = [value] if rng.random() < 0.5 else {"n": value}
        return value
    if roll < 0.85:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys: list[Any] = ["a", "b", 1, None, "", "c"]
    return {rng.choice(keys): hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def hostile_message(rng: random.Random, next_id: int) -> dict[Any, Any]:
    message: dict[Any, Any] = {}
    id_roll = rng.random()
    if id_roll < 0.85:
        message["id"] = next_id
    elif id_roll < 0.92:
        message["id"] = hostile_scalar(rng)
    message["op"] = rng.choice(OPS) if rng.random() < 0.95 else hostile_scalar(rng)
    for _ in range(rng.randrange(5)):
        name = rng.choice(ARGUMENT_NAMES) if rng.random() < 0.9 else hostile_scalar(rng)
        if isinstance(name, BigInt):
            name = 7
        message[name] = hostile_value(rng)
    return message


def encode(messages: list[Any]) -> bytes:
    return msgpack.packb(messages, use_bin_type=True, default=_default)  # type: ignore[no-any-return]


def malformed_frame(rng: random.Random) -> bytes:
    """Bytes that are not a decodable batch of maps: the server ends that stream."""
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 64))
    if kind == 1:
        return encode([{"id": 1, "op": "ping"}])[:-1] + b"\xc1"  # never-used byte
    if kind == 2:
        return encode({"not": "a list"})
    if kind == 3:
        return encode([1, 2, 3])
    if kind == 4:
        return b"\x91" * 1500 + b"\x01"
    if kind == 5:
        return encode([{"id": 1, "op": "update", "updates": {"k": BigInt("9" * 5000)}}])
    if kind == 6:
        return encode([{"id": 1, "op": "update", "updates": {"k": BigInt("12x")}}])
    return encode([{"id": 1}]) + b"trailing"


NANOVER_METHODS = [
    "/nanover.protocol.state.State/UpdateState",
    "/nanover.protocol.state.State/UpdateLocks",
    "/nanover.protocol.command.Command/RunCommand",
    "/nanover.protocol.command.Command/GetCommands",
]


def _deep_struct(depth: int) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    inner = struct
    for _ in range(depth):
        inner = inner.fields["n"].struct_value
    inner.fields["leaf"].number_value = 1
    return struct


def hostile_nanover_request(rng: random.Random) -> tuple[str, bytes]:
    """A NanoVer method and request bytes: garbage, or well-formed with hostile content."""
    method = rng.choice(NANOVER_METHODS)
    if rng.random() < 0.4:
        return method, rng.randbytes(rng.randrange(1, 48))
    changed = struct_pb2.Struct()
    roll = rng.random()
    if roll < 0.3:
        changed = _deep_struct(rng.choice([5, 20, 31]))
    elif roll < 0.6:
        changed.fields["lease"].number_value = rng.choice([float("nan"), -1.0, 1e308, 0.0, 5.0])
    elif roll < 0.8:
        changed.fields["s"].string_value = "y" * rng.choice([1, 1000, 100_000])
    else:
        changed.fields["l"].list_value.values.add().bool_value = True
    if method.endswith("UpdateState"):
        update = state_service_pb2.StateUpdate(changed_keys=changed)
        request: Any = state_service_pb2.UpdateStateRequest(access_token="fuzz", update=update)
    elif method.endswith("UpdateLocks"):
        request = state_service_pb2.UpdateLocksRequest(access_token="fuzz", lock_keys=changed)
    elif method.endswith("RunCommand"):
        request = command_service_pb2.CommandMessage(
            name=rng.choice(["commands/list", "missing", ""]), arguments=changed
        )
    else:
        request = command_service_pb2.GetCommandsRequest()
    return method, request.SerializeToString()
