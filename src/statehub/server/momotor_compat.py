"""Momotor's shared locks: ``/momotor.rpc.proto.Worker/sharedLock`` over statehub's locks.

A Momotor worker (``momotor.rpc.shared.SharedState``, grpclib) takes a read/write lock
with one bidirectional stream, and statehub serves that stream from the same lock table
its own clients use (``Hub.locks``: in-process, or in Redis, shared by every server), so
a worker's lock and a statehub client's lock exclude each other, in one queue, with the
table's writer preference and FIFO order. This module only translates:

- first message ``{lock: true, key, exclusive}``: the stream becomes one lock owner and
  waits in the table's queue; once granted, one answer ``{locked: true}``. Nothing is sent
  while it is held. ``{lock: false}`` releases it and is answered with whether the lock is
  still held in that mode (another owner may have it already); then the worker ends its
  side and the call ends OK. Further ``{lock: true}`` messages change nothing.
- first message ``{lock: false, key, exclusive}``: a test, answered with whether some
  owner holds the key *in that mode* (Momotor's meaning; statehub's own ``test_lock``
  answers the opposite question, whether the lock is free to take).
- however the stream ends otherwise (the worker cancelled, its connection dropped or the
  server's keepalive gave up on it, the server stopping) its lock is released, or its
  wait withdrawn, at once.

Who calls: the ``auth-token`` metadata Momotor's client sends (or ``authorization:
Bearer``, or a TLS client certificate) authenticated by ``Hub.auth`` as any session is,
and the key checked against the identity's ``lock`` rights as the session protocol's
``lock`` is. A refusal is ``exception {type: AUTH}`` (a bad request ``FORMAT``), which
Momotor's client raises as ``AuthException`` (``FormatException``). It is sent while the
worker's side is still open and the call is then kept until the worker ends or cancels it
(at most ``REFUSAL_LINGER_S``): ending it first makes grpcio reset the stream, and grpclib
then drops the answer. A lock the table cannot grant (its store is unavailable) is
answered ``{locked: false}``: Momotor's ``LockFailed``; a test or a release it cannot
answer ends the call with the error's status (UNAVAILABLE), once the worker's side has
ended. When the identities are reloaded, a call holding or waiting for a lock whose
credential no longer authenticates is ended with UNAUTHENTICATED (its lock released), as
a session would be; Momotor's client raises that status (grpclib's ``GRPCError``) when it
next reads, at its release.

The messages are statehub's own (``momotor_proto``); this module loads protobuf, so the
server imports it only when it sets up its services.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message
from grpc import aio

from statehub.auth import Credentials, Principal
from statehub.core.values import check_key
from statehub.errors import PermissionDeniedError, StatehubError, UnauthenticatedError
from statehub.protocol.errors import error_message, status_of
from statehub.server.grpc_credentials import bearer_token, certificate_identities
from statehub.server.momotor_proto import shared_lock_pb2 as pb
from statehub.server.operations.locks import acquire_lock, lock_is_held, may_lock, release_lock
from statehub.server.session import Hub

logger = logging.getLogger(__name__)

Context: TypeAlias = "aio.ServicerContext[bytes, Message]"

#: Momotor's service and method: the call's path is /momotor.rpc.proto.Worker/sharedLock.
WORKER_SERVICE = "momotor.rpc.proto.Worker"
SHARED_LOCK_METHOD = "sharedLock"
#: The metadata key carrying a Momotor worker's token.
AUTH_TOKEN_METADATA = "auth-token"
#: Seconds an answered call waits for the worker to end its side before ending anyway.
REFUSAL_LINGER_S = 10.0


def momotor_handler(hub: Hub) -> grpc.GenericRpcHandler:
    """The generic handler serving Momotor's ``Worker/sharedLock`` from ``hub``'s locks."""
    edge = MomotorLocks(hub)
    return grpc.method_handlers_generic_handler(
        WORKER_SERVICE,
        {
            SHARED_LOCK_METHOD: grpc.stream_stream_rpc_method_handler(
                edge.shared_lock, response_serializer=_serialize
            )
        },
    )


class _Refused(Exception):
    """The call is answered with Momotor's ``exception`` field, then ends."""

    def __init__(self, kind: int, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


class MomotorLocks:
    """Serves ``sharedLock``: each call is one lock owner of its own in ``hub.locks``."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        #: The calls holding or waiting for a lock, and the credentials they presented.
        self._calls: dict[asyncio.Task[Any], Credentials] = {}
        #: Calls ended by a reload (cancelled, to end with UNAUTHENTICATED), and why.
        self._revoked: dict[asyncio.Task[Any], UnauthenticatedError] = {}
        hub.auth_listeners.append(self._reauthenticate)

    def _reauthenticate(self) -> None:
        """The identities were reloaded: end each call whose credential no longer
        authenticates (as a session is ended), so that its lock is released."""
        for call, credentials in list(self._calls.items()):
            try:
                self._hub.auth.authenticate(credentials)
            except UnauthenticatedError as error:
                logger.info("Momotor sharedLock call ended: %s", error)
                self._revoked[call] = error
                call.cancel()

    async def shared_lock(self, requests: AsyncIterator[bytes], context: Context) -> None:
        try:
            await self._serve(context)
        except _Refused as refusal:
            logger.info("Momotor sharedLock from %s refused: %s", context.peer(), refusal.text)
            exception = pb.Exception(type=refusal.kind, text=refusal.text)  # type: ignore[arg-type]
            await context.write(pb.SharedLockResponse(exception=exception))
            await _until_worker_ends(context)
        except StatehubError as error:  # a test or a release the store could not answer
            logger.warning("Momotor sharedLock from %s failed: %s", context.peer(), error)
            await context.abort(
                grpc.StatusCode[status_of(error)], f"{type(error).__name__}: {error_message(error)}"
            )

    async def _serve(self, context: Context) -> None:
        first = await _read(context)
        if first is None:
            return  # the worker ended its side without asking anything
        key, exclusive = _checked_key(first.key), first.exclusive
        op = "lock" if first.lock else "test_lock"
        credentials = _credentials(context)
        try:
            principal = self._hub.auth.authenticate(credentials)
            may_lock(principal, key, op)  # refused in Momotor's terms, before anything waits
        except (UnauthenticatedError, PermissionDeniedError) as error:
            raise _Refused(pb.AUTH, f"{type(error).__name__}: {error_message(error)}") from None
        locks = self._hub.locks
        if not first.lock:
            held = await lock_is_held(locks, principal, key, exclusive=exclusive, op=op)
            await context.write(pb.SharedLockResponse(locked=held))
            await _until_worker_ends(context)
            return
        # One owner per call, never shared: (a name no session id can be, the identity).
        owner = (f"momotor:{uuid.uuid4().hex}", principal.name)
        call = asyncio.current_task()
        assert call is not None, "grpc.aio runs each call in a task"
        self._calls[call] = credentials
        try:
            await self._hold(context, principal, key, exclusive, owner)
        except asyncio.CancelledError:
            revoked = self._revoked.pop(call, None)
            if revoked is None:
                raise  # the call itself was cancelled (the worker, its connection, a stop)
            call.uncancel()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, error_message(revoked))
        finally:
            del self._calls[call]
            self._revoked.pop(call, None)

    async def _hold(
        self,
        context: Context,
        principal: Principal,
        key: str,
        exclusive: bool,
        owner: tuple[str, str],
    ) -> None:
        """Wait for the lock, hold it until the worker releases it or the call ends."""
        locks = self._hub.locks
        try:
            await acquire_lock(locks, principal, key, owner, exclusive=exclusive)
        except StatehubError as error:  # the table could not grant it (store unavailable)
            logger.warning("Momotor lock on %r not granted: %s", key, error)
            await context.write(pb.SharedLockResponse(locked=False))
            await _until_worker_ends(context)
            return
        released = False
        try:
            await context.write(pb.SharedLockResponse(locked=True))
            while not released:  # until the release, or the end of the worker's side
                request = await _read(context)
                if request is None:
                    return  # ended without a release: the lock goes with the call
                if request.lock:
                    continue  # "if lock is true on subsequent requests, nothing changes"
                await release_lock(locks, principal, key, owner, exclusive=exclusive)
                released = True
            held = await lock_is_held(locks, principal, key, exclusive=exclusive)
            await context.write(pb.SharedLockResponse(locked=held))
            await _until_worker_ends(context)
        finally:
            if not released:  # cancelled, dropped, stopped, or ended without a release
                locks.release_owner(owner)


def _checked_key(key: str) -> str:
    if not key:
        raise _Refused(pb.FORMAT, "the first request of a sharedLock call must name a key")
    try:
        return check_key(key)
    except (TypeError, ValueError) as error:
        raise _Refused(pb.FORMAT, error_message(error)) from None


async def _read(context: Context) -> Any:
    """The worker's next request, or None once it has ended its side."""
    raw: object = await context.read()
    if raw is aio.EOF:
        return None
    assert isinstance(raw, bytes), "sharedLock has no request deserializer"
    try:
        return pb.SharedLockRequest.FromString(raw)
    except DecodeError as error:
        raise _Refused(pb.FORMAT, f"malformed SharedLockRequest: {error}") from None


async def _until_worker_ends(context: Context) -> None:
    """Wait (bounded) for the worker to end its side, so that the call can end cleanly."""
    try:
        async with asyncio.timeout(REFUSAL_LINGER_S):
            while True:
                request: object = await context.read()
                if request is aio.EOF:
                    return
                # nothing it sends now changes anything
    except TimeoutError:
        logger.debug("Momotor worker %s kept its side open: ending the call", context.peer())


def _credentials(context: Context) -> Credentials:
    """Momotor's ``auth-token`` metadata, else an ``authorization: Bearer`` token; and the
    TLS client certificate's names."""
    token = None
    for name, value in context.invocation_metadata() or ():
        if name == AUTH_TOKEN_METADATA and isinstance(value, str) and value.strip():
            token = value.strip()
            break
    return Credentials(token or bearer_token(context), certificate_identities(context))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
