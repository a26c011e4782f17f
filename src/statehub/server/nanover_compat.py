"""NanoVer-compatible gRPC services: ``nanover.protocol.state.State`` and ``...command.Command``.

NanoVer's gRPC-era clients (Python scripts, the Unity VR client) reach statehub's state
and commands through these, unchanged. Values travel as ``google.protobuf.Struct``, as in
NanoVer: every number is a double on this protocol (an int 1 written here is read back
as 1.0), and a null value means "remove this key" (or "release this lease"), so null
cannot be stored through it. An int too large for a double is sent as +/-infinity.

Refused leases and writes answer ``success=False`` as NanoVer did; bad input (a negative
or NaN lease duration, a lease value that is neither a number nor null, a request over
the size limit, an unknown command, wrong command arguments, a command that raised)
aborts the call with the fitting gRPC status and a message naming what was wrong.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf import struct_pb2
from grpc import aio

from statehub.core.change import DictionaryChange
from statehub.core.values import JsonValue
from statehub.errors import ResourceLockedError
from statehub.protocol.errors import MessageTooLargeError, error_message, status_of
from statehub.server.nanover_proto import (
    command_service_pb2,
    command_service_pb2_grpc,
    state_service_pb2,
    state_service_pb2_grpc,
)
from statehub.server.session import Hub

Context: TypeAlias = "aio.ServicerContext[Any, Any]"


def add_nanover_services(hub: Hub, server: aio.Server) -> None:
    """Serve NanoVer's state and command services from ``hub`` on ``server``."""
    state_service_pb2_grpc.add_StateServicer_to_server(NanoverStateService(hub), server)
    command_service_pb2_grpc.add_CommandServicer_to_server(NanoverCommandService(hub), server)


class NanoverStateService:
    """``nanover.protocol.state.State`` over statehub's state dictionary."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def SubscribeStateUpdates(self, request: Any, context: Context) -> AsyncIterator[Any]:
        interval = request.update_interval
        if not 0 <= interval < math.inf:
            await _abort(
                context,
                ValueError(f"update_interval must be a finite number >= 0, got {interval!r}"),
            )
        interval = max(interval, self._hub.min_interval)
        with self._hub.state.get_change_buffer() as view:
            async for change in view.subscribe_changes_async(interval):
                changed = struct_pb2.Struct()
                for key, value in change.updates.items():
                    _set_value(changed.fields[key], value)
                for key in change.removals:
                    changed.fields[key].null_value = struct_pb2.NULL_VALUE
                yield state_service_pb2.StateUpdate(changed_keys=changed)

    async def UpdateState(self, request: Any, context: Context) -> Any:
        await _check_size(self._hub, request, context)
        updates: dict[str, JsonValue] = {}
        removals: list[str] = []
        for key, value in request.update.changed_keys.fields.items():
            if value.WhichOneof("kind") in (None, "null_value"):
                removals.append(key)
            else:
                updates[key] = _python_value(value)
        state = self._hub.state
        try:
            change = DictionaryChange(updates, removals)
            revision = await state.update_state_async(request.access_token, change)
            await state.wait_durable_async(revision)  # acknowledge once durable (SQLite "disk")
        except ResourceLockedError:
            return state_service_pb2.UpdateStateResponse(success=False)
        except Exception as error:
            await _abort(context, error)
        return state_service_pb2.UpdateStateResponse(success=True)

    async def UpdateLocks(self, request: Any, context: Context) -> Any:
        await _check_size(self._hub, request, context)
        acquire: dict[str, float] = {}
        release: list[str] = []
        for key, value in request.lock_keys.fields.items():
            kind = value.WhichOneof("kind")
            if kind in (None, "null_value"):
                release.append(key)
            elif kind == "number_value":
                acquire[key] = value.number_value
            else:
                await _abort(
                    context,
                    ValueError(
                        f"lock_keys[{key!r}]: expected a number of seconds (acquire) or null "
                        f"(release), got a {kind.removesuffix('_value')}"
                    ),
                )
        try:
            self._hub.state.update_locks(request.access_token, acquire, release)
        except ResourceLockedError:
            return state_service_pb2.UpdateLocksResponse(success=False)
        except Exception as error:
            await _abort(context, error)
        return state_service_pb2.UpdateLocksResponse(success=True)


class NanoverCommandService:
    """``nanover.protocol.command.Command`` over statehub's command registry."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def GetCommands(self, request: Any, context: Context) -> Any:
        return command_service_pb2.GetCommandsReply(
            commands=[
                command_service_pb2.CommandMessage(name=name, arguments=_struct(defaults))
                for name, defaults in self._hub.commands.list().items()
            ]
        )

    async def RunCommand(self, request: Any, context: Context) -> Any:
        await _check_size(self._hub, request, context)
        arguments = {key: _python_value(value) for key, value in request.arguments.fields.items()}
        try:
            result = await self._hub.commands.run_async(request.name, arguments)
        except Exception as error:
            await _abort(context, error)
        return command_service_pb2.CommandReply(result=_struct(result or {}))


async def _abort(context: Context, error: BaseException) -> NoReturn:
    await context.abort(
        grpc.StatusCode[status_of(error)], f"{type(error).__name__}: {error_message(error)}"
    )
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


async def _check_size(hub: Hub, request: Any, context: Context) -> None:
    size = request.ByteSize()
    if size > hub.max_message_bytes:
        await _abort(
            context,
            MessageTooLargeError(
                f"a request of {size} bytes is over the limit of {hub.max_message_bytes} bytes "
                "(max_message_bytes); nothing was applied"
            ),
        )


def _python_value(value: struct_pb2.Value) -> JsonValue:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {key: _python_value(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_python_value(item) for item in value.list_value.values]
    return None


def _struct(mapping: Mapping[str, JsonValue]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    for key, value in mapping.items():
        _set_value(struct.fields[key], value)
    return struct


def _set_value(target: struct_pb2.Value, value: JsonValue) -> None:
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif type(value) is bool:
        target.bool_value = value
    elif type(value) is int:
        try:
            target.number_value = float(value)
        except OverflowError:
            target.number_value = math.inf if value > 0 else -math.inf
    elif type(value) is float:
        target.number_value = value
    elif type(value) is str:
        target.string_value = value
    elif type(value) is dict:
        target.struct_value.Clear()
        for key, item in value.items():
            _set_value(target.struct_value.fields[key], item)
    else:
        target.list_value.Clear()
        for item in value:  # type: ignore[union-attr]
            _set_value(target.list_value.values.add(), item)
