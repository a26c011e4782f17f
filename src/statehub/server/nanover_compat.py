"""NanoVer-compatible gRPC services: ``nanover.protocol.state.State`` and ``...command.Command``.

NanoVer's gRPC-era clients (Python scripts, the Unity VR client) reach statehub's state
and commands through these, unchanged. Values travel as ``google.protobuf.Struct``, as in
NanoVer: every number is a double on this protocol (an int 1 written here is read back
as 1.0), and a null value means "remove this key" (or "release this lease"), so null
cannot be stored through it. An int too large for a double is sent as +/-infinity.

Who calls is decided per call from its ``authorization: Bearer`` metadata or TLS client
certificate (unmodified NanoVer clients present neither: they get the anonymous role). A
right the identity lacks aborts with PERMISSION_DENIED (UNAUTHENTICATED without an
identity), and a subscription carries only the keys it may read; when reloaded identities
change those, it sends a fresh copy of what it may now read, with null for every key the
client's copy holds that it may no longer see, and goes on under the new rights. NanoVer's
``access_token`` names lease owners, as in NanoVer: a client that reconnects with the same
token keeps its leases. The owner is bound to the identity that presents the token
(``operations/owner.py``): under ``--auth`` another identity naming the same token is
another owner.

Refused leases and writes answer ``success=False`` as NanoVer did; a lease duration <= 0
expires at once, as in NanoVer; bad input (bytes that are not the request message, a NaN
lease duration, a lease value that is neither a number nor null, a request over the size
limit, an unknown command, wrong command arguments, a command that raised) aborts the
call with the fitting gRPC status and a message naming what was wrong. Requests arrive as
raw bytes and are parsed here, so that a malformed one is the client's INVALID_ARGUMENT,
not a server-side UNKNOWN.

When this server was cut off from the shared store (Redis) and the other servers released
its holds, a token's leases taken here are known lost (``nanover_leases``): its writes to
those keys answer ``success=False`` until it leases them again, rather than going through
unprotected.

A state update larger than a NanoVer client accepts in one message (gRPC's default
receive limit, 4 MiB) is sent as several updates, each under it.

The message classes are statehub's own (proto package ``statehub.nanover_compat``, see
``nanover_proto``), served here at NanoVer's service paths: NanoVer's generated modules
can be imported in the same process. This module loads protobuf, so the server imports it
only when it sets up its services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError, Message
from grpc import aio

from statehub.auth import OpenAccess, PrefixSet, Principal
from statehub.auth.authenticator import Authenticator
from statehub.core.change import DictionaryChange
from statehub.core.pacing import Pacer
from statehub.core.values import JsonValue, bytes_as_json
from statehub.errors import MessageTooLargeError, ObjectFrozenError, ResourceLockedError
from statehub.protocol.errors import error_message, status_of
from statehub.server.grpc_credentials import call_credentials
from statehub.server.nanover_leases import NanoverLeaseBook
from statehub.server.nanover_proto import command_service_pb2, state_service_pb2
from statehub.server.operations.commands import callable_only, run_command
from statehub.server.operations.copies import keys_to_drop
from statehub.server.operations.leases import change_leases
from statehub.server.operations.owner import nanover_token_owner
from statehub.server.operations.reads import readable_keys
from statehub.server.operations.state import submit_write
from statehub.server.session import Hub
from statehub.server.subscriptions import FanoutGroup, FanoutGroups

Context: TypeAlias = "aio.ServicerContext[Any, Any]"

logger = logging.getLogger(__name__)

#: The largest update sent to a NanoVer subscriber in one message: under gRPC's default
#: receive limit (4 MiB), which NanoVer's clients keep.
NANOVER_UPDATE_BYTES = 4 * 1024 * 1024 - 64 * 1024

STATE_SERVICE = "nanover.protocol.state.State"
COMMAND_SERVICE = "nanover.protocol.command.Command"


def add_nanover_services(hub: Hub, server: aio.Server) -> None:
    """Serve NanoVer's state and command services from ``hub`` on ``server``."""
    state = NanoverStateService(hub)
    commands = NanoverCommandService(hub)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                STATE_SERVICE,
                {
                    "SubscribeStateUpdates": grpc.unary_stream_rpc_method_handler(
                        _parsed_stream(
                            state_service_pb2.SubscribeStateUpdatesRequest,
                            state.SubscribeStateUpdates,
                        ),
                        # The handler yields bytes: a group's updates are serialized once.
                        response_serializer=_already_serialized,
                    ),
                    "UpdateState": _unary(state_service_pb2.UpdateStateRequest, state.UpdateState),
                    "UpdateLocks": _unary(state_service_pb2.UpdateLocksRequest, state.UpdateLocks),
                },
            ),
            grpc.method_handlers_generic_handler(
                COMMAND_SERVICE,
                {
                    "GetCommands": _unary(
                        command_service_pb2.GetCommandsRequest, commands.GetCommands
                    ),
                    "RunCommand": _unary(command_service_pb2.CommandMessage, commands.RunCommand),
                },
            ),
        )
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _already_serialized(data: bytes) -> bytes:
    return data


async def _parse(message_type: type[Message], raw: bytes, context: Context) -> Any:
    try:
        return message_type.FromString(raw)
    except DecodeError as error:
        await _abort(
            context,
            ValueError(f"malformed {_nanover_name(message_type)} request: {error}"),
        )


def _nanover_name(message_type: type[Message]) -> str:
    """The message's name as NanoVer's clients know it (statehub's copy has its own package)."""
    return message_type.DESCRIPTOR.full_name.replace(
        "statehub.nanover_compat.", "nanover.protocol.", 1
    )


def _unary(
    message_type: type[Message], method: Callable[[Any, Context], Awaitable[Message]]
) -> grpc.RpcMethodHandler[bytes, Message]:
    async def handle(raw: bytes, context: Context) -> Message:
        return await method(await _parse(message_type, raw, context), context)

    return grpc.unary_unary_rpc_method_handler(handle, response_serializer=_serialize)


def _parsed_stream(
    message_type: type[Message], method: Callable[[Any, Context], AsyncIterator[bytes]]
) -> Callable[[bytes, Context], AsyncIterator[bytes]]:
    async def handle(raw: bytes, context: Context) -> AsyncIterator[bytes]:
        async for reply in method(await _parse(message_type, raw, context), context):
            yield reply

    return handle


class NanoverStateUpdates:
    """NanoVer's gRPC state delivery for the fan-out engine: a change as serialized
    ``StateUpdate`` messages, at one ``update_interval`` on a steady clock."""

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def encode(self, revision: int, change: DictionaryChange) -> list[bytes]:
        if not (change.updates or change.removals):
            return []
        return _serialized_updates(change.updates, change.removals)


class _StateSubscriber:
    """A ``SubscribeStateUpdates`` call as a fan-out group member: the shared updates of
    one change wait here until the call's handler yields them to gRPC."""

    def __init__(self) -> None:
        self.group: FanoutGroup[_StateSubscriber] | None = None
        #: The shared updates not yet yielded, and the revision they bring the client to.
        self.pending: list[bytes] = []
        self.pending_revision = 0
        #: Once out of the group: the revision to go on from alone (None: the state ended).
        self.resume_from: int | None = None
        self.wake = asyncio.Event()

    def offer(self, bodies: list[bytes], since: int, revision: int) -> bool:
        if self.pending:
            return False  # its client has not taken the previous change yet: it falls behind
        self.pending = bodies
        self.pending_revision = revision
        self.wake.set()
        return True

    def left(self, resume_from: int | None) -> None:
        self.group = None
        self.resume_from = resume_from
        self.wake.set()

    def leave_group(self) -> None:
        """Out of the group by itself (new read rights, the call ended); nothing queued stays."""
        group, self.group = self.group, None
        self.pending = []
        if group is not None:
            group.discard(self)


class NanoverStateService:
    """``nanover.protocol.state.State`` over statehub's state dictionary."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        #: What its owners leased here: a sweep of this server makes their writes refused.
        self._leases = NanoverLeaseBook()
        #: The fan-out groups of subscriptions, one family per update interval a running
        #: call asked for, with how many such calls run (a family goes with the last one:
        #: a client trying many intervals leaves nothing behind).
        self._fanouts: dict[float, tuple[FanoutGroups[_StateSubscriber], int]] = {}
        hub.state.holds_lost.add_callback(self._leases.swept)

    async def SubscribeStateUpdates(self, request: Any, context: Context) -> AsyncIterator[bytes]:
        """Serialized ``StateUpdate`` messages: the readable state, then its changes.

        The call delivers alone from a view of its own until that view has caught up with
        the fan-out group of its interval and read rights; then it is a member of the
        group, which encodes each change once for all its members. A member whose client
        has not yet taken the previous update leaves and catches up alone (coalesced).
        """
        interval = request.update_interval
        if not 0 <= interval < math.inf:
            await _abort(
                context,
                ValueError(f"update_interval must be a finite number >= 0, got {interval!r}"),
            )
        interval = max(interval, self._hub.min_interval)
        readable = await self._readable(context)
        with self._fanout_at(interval) as groups:
            delivering = self._deliver(context, groups, interval, readable)
            async with contextlib.aclosing(delivering) as updates:  # it leaves its group now
                async for update in updates:
                    yield update

    @contextlib.contextmanager
    def _fanout_at(self, interval: float) -> Iterator[FanoutGroups[_StateSubscriber]]:
        """The fan-out groups of ``interval``, while a call delivers at it."""
        groups, calls = self._fanouts.get(interval, (None, 0))
        if groups is None:
            groups = FanoutGroups(self._hub, NanoverStateUpdates(interval))
        self._fanouts[interval] = (groups, calls + 1)
        try:
            yield groups
        finally:
            groups, calls = self._fanouts[interval]
            if calls == 1:
                del self._fanouts[interval]
            else:
                self._fanouts[interval] = (groups, calls - 1)

    async def _deliver(
        self,
        context: Context,
        groups: FanoutGroups[_StateSubscriber],
        interval: float,
        readable: PrefixSet,
    ) -> AsyncGenerator[bytes, None]:
        subscriber = _StateSubscriber()
        state = self._hub.state
        identities = self._hub.auth
        since: int | None = None  # where its own view starts (None: a fresh copy)
        shown: PrefixSet | None = None  # the read rights of what was sent, once they change
        delivered = 0  # the revision the client's copy has every change up to
        try:
            while True:
                key_filter = None if readable.everything else readable.__contains__
                joined: FanoutGroup[_StateSubscriber] | None = None
                with state.get_change_buffer(since, "", key_filter) as view:
                    pacer = Pacer(interval)
                    while True:
                        await asyncio.sleep(pacer.delay())
                        try:
                            change = await view.flush_changed_async(copy=False)
                        except ObjectFrozenError:
                            return
                        pacer.flushed()
                        identities, now_readable = await self._rights_after(context, identities)
                        if now_readable is not None and now_readable != readable:
                            shown, readable = readable, now_readable
                            break  # this change was filtered by the old rights: start again
                        removals = change.removals
                        if shown is not None:  # a fresh copy under new rights: drop what they hide
                            removals = removals | keys_to_drop(
                                state, [shown], delivered, change.updates
                            )
                            shown = None
                        delivered = view.cursor
                        updates = _serialized_updates(change.updates, removals)
                        # Joined now, just flushed: gRPC may resume this generator only
                        # once the client has read the update, after the next change came.
                        joined = groups.join(subscriber, view, "", readable)
                        if joined is not None:
                            subscriber.group = joined
                            subscriber.pending_revision = delivered
                            subscriber.wake.clear()  # a wake-up from an earlier group is done
                        for update in updates:
                            yield update
                        if joined is not None:
                            break  # (the group may have let it go meanwhile: see below)
                if joined is None:
                    since = None  # new read rights: a fresh copy
                    continue
                while True:  # in the group: yield what it shares
                    await subscriber.wake.wait()
                    subscriber.wake.clear()
                    identities, now_readable = await self._rights_after(context, identities)
                    if now_readable is not None and now_readable != readable:
                        shown, readable = readable, now_readable
                        subscriber.leave_group()  # what waits was filtered by the old rights
                        since = None
                        break
                    bodies, subscriber.pending = subscriber.pending, []
                    delivered = subscriber.pending_revision
                    for body in bodies:
                        yield body
                    if subscriber.group is None:  # left: the state ended, or it fell behind
                        if subscriber.resume_from is None:
                            return
                        since = subscriber.resume_from
                        break
        finally:
            subscriber.leave_group()

    async def _rights_after(
        self, context: Context, seen: Authenticator | OpenAccess
    ) -> tuple[Authenticator | OpenAccess, PrefixSet | None]:
        """The hub's identities now, and, if they were reloaded since ``seen``, the keys
        this call may read under them (None: not reloaded)."""
        identities = self._hub.auth
        if identities is seen:
            return seen, None
        return identities, await self._readable(context)

    async def _readable(self, context: Context) -> PrefixSet:
        """The keys this call's identity may read; aborts if it may read none."""
        principal = await _principal(self._hub, context)
        try:
            return readable_keys(principal, "SubscribeStateUpdates")
        except Exception as error:
            await _abort(context, error)

    async def UpdateState(self, request: Any, context: Context) -> Any:
        await _check_size(self._hub, request, context)
        updates: dict[str, JsonValue] = {}
        removals: list[str] = []
        for key, value in request.update.changed_keys.fields.items():
            if value.WhichOneof("kind") in (None, "null_value"):
                removals.append(key)
            else:
                updates[key] = _python_value(value)
        principal = await _principal(self._hub, context)
        state = self._hub.state
        try:
            owner = nanover_token_owner(request.access_token, principal.name)
            if lost := self._leases.lost_keys(owner, [*updates, *removals]):
                logger.info(
                    "UpdateState refused: its token's leases on %s were lost when this "
                    "server was swept (lease them again)",
                    ", ".join(lost),
                )
                return state_service_pb2.UpdateStateResponse(success=False)
            revision = await submit_write(
                state, principal, owner, updates, removals, op="UpdateState"
            )
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
                seconds = value.number_value
                acquire[key] = 0.0 if seconds < 0 else seconds  # NanoVer: <= 0 expires at once
            else:
                await _abort(
                    context,
                    ValueError(
                        f"lock_keys[{key!r}]: expected a number of seconds (acquire) or null "
                        f"(release), got a {kind.removesuffix('_value')}"
                    ),
                )
        principal = await _principal(self._hub, context)
        try:
            owner = nanover_token_owner(request.access_token, principal.name)
            await change_leases(
                self._hub.state, principal, owner, acquire, release, op="UpdateLocks"
            )
        except ResourceLockedError:
            self._leases.changed(owner, {}, release)  # releases are carried out regardless
            return state_service_pb2.UpdateLocksResponse(success=False)
        except Exception as error:
            await _abort(context, error)
        self._leases.changed(owner, acquire, release)
        return state_service_pb2.UpdateLocksResponse(success=True)


class NanoverCommandService:
    """``nanover.protocol.command.Command`` over statehub's command registry."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def GetCommands(self, request: Any, context: Context) -> Any:
        principal = await _principal(self._hub, context)
        listing = callable_only(self._hub.commands.list(), principal)
        return command_service_pb2.GetCommandsReply(
            commands=[
                command_service_pb2.CommandMessage(name=name, arguments=_struct(defaults))
                for name, defaults in listing.items()
            ]
        )

    async def RunCommand(self, request: Any, context: Context) -> Any:
        await _check_size(self._hub, request, context)
        arguments = {key: _python_value(value) for key, value in request.arguments.fields.items()}
        principal = await _principal(self._hub, context)
        try:
            result = await run_command(
                self._hub.commands, principal, request.name, arguments, "RunCommand"
            )
        except Exception as error:
            await _abort(context, error)
        return command_service_pb2.CommandReply(result=_struct(result or {}))


async def _abort(context: Context, error: BaseException) -> NoReturn:
    await context.abort(
        grpc.StatusCode[status_of(error)], f"{type(error).__name__}: {error_message(error)}"
    )
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


async def _principal(hub: Hub, context: Context) -> Principal:
    """Who this call is; aborts with UNAUTHENTICATED if its credential is refused."""
    try:
        return hub.auth.authenticate(call_credentials(context))
    except Exception as error:
        await _abort(context, error)


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


def _state_updates(updates: Mapping[str, JsonValue], removals: set[str]) -> Iterator[Any]:
    """``StateUpdate`` messages carrying a change, each under ``NANOVER_UPDATE_BYTES``."""
    changed = struct_pb2.Struct()
    size = 0
    entries: list[tuple[str, JsonValue]] = [*updates.items(), *((key, None) for key in removals)]
    for key, value in entries:
        _set_value(changed.fields[key], value)
        entry_size = changed.fields[key].ByteSize() + len(key.encode()) + 16
        if size and size + entry_size > NANOVER_UPDATE_BYTES:
            del changed.fields[key]
            yield state_service_pb2.StateUpdate(changed_keys=changed)
            changed, size = struct_pb2.Struct(), 0
            _set_value(changed.fields[key], value)
        size += entry_size
    yield state_service_pb2.StateUpdate(changed_keys=changed)


def _serialized_updates(updates: Mapping[str, JsonValue], removals: set[str]) -> list[bytes]:
    return [update.SerializeToString() for update in _state_updates(updates, removals)]


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
    elif type(value) is bytes:  # a Struct has no bytes: the stand-in of core.values
        _set_value(target, bytes_as_json(value))
    elif type(value) is dict:
        target.struct_value.Clear()
        for key, item in value.items():
            _set_value(target.struct_value.fields[key], item)
    else:
        target.list_value.Clear()
        for item in value:  # type: ignore[union-attr]
            _set_value(target.list_value.values.add(), item)
