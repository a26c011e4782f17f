"""Rights on NanoVer's gRPC services: a bearer token in metadata, or the anonymous role."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from statehub import DictionaryChange, StateServer
from support import nanover_modules
from support.auth import TOKENS, auth_server, identities, write_identities
from support.polling import DEADLINE

# NanoVer's own generated modules, as an unmodified NanoVer client uses them.
state_service_pb2, state_service_pb2_grpc, command_service_pb2, command_service_pb2_grpc = (
    nanover_modules.load()
)


class Nanover:
    """A NanoVer client's calls, with the ``authorization`` metadata a lab's script adds."""

    def __init__(self, channel: grpc.aio.Channel, user: str | None) -> None:
        self.state = state_service_pb2_grpc.StateStub(channel)
        self.command = command_service_pb2_grpc.CommandStub(channel)
        self.metadata = (("authorization", f"Bearer {TOKENS[user]}"),) if user else None

    async def update(self, changes: dict[str, Any]) -> bool:
        request = state_service_pb2.UpdateStateRequest(
            access_token="", update=state_service_pb2.StateUpdate(changed_keys=_struct(changes))
        )
        reply = await self.state.UpdateState(request, metadata=self.metadata)
        return bool(reply.success)

    async def locks(self, lock_keys: dict[str, Any]) -> bool:
        request = state_service_pb2.UpdateLocksRequest(
            access_token="", lock_keys=_struct(lock_keys)
        )
        return bool((await self.state.UpdateLocks(request, metadata=self.metadata)).success)

    async def run(self, name: str) -> None:
        message = command_service_pb2.CommandMessage(name=name, arguments=_struct({}))
        await self.command.RunCommand(message, metadata=self.metadata)

    async def commands(self) -> set[str]:
        reply = await self.command.GetCommands(
            command_service_pb2.GetCommandsRequest(), metadata=self.metadata
        )
        return {command.name for command in reply.commands}

    def subscribe(self) -> Any:
        return self.state.SubscribeStateUpdates(
            state_service_pb2.SubscribeStateUpdatesRequest(update_interval=0),
            metadata=self.metadata,
        )


def _struct(mapping: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(mapping)
    return struct


@asynccontextmanager
async def nanover(server: StateServer, user: str | None) -> AsyncIterator[Nanover]:
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.grpc_port}", options=options
    ) as channel:
        yield Nanover(channel, user)


async def denied(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_each_service_call_is_allowed_or_denied_by_its_right(tmp_path: Path) -> None:
    async with (
        auth_server(tmp_path) as server,
        nanover(server, "walt") as walt,
        nanover(server, "rita") as rita,
    ):
        assert await walt.update({"lab/w/a": 1})
        refused = await denied(walt.update({"lab/w/b": 1, "lab/x": 1}))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "write right on key 'lab/x'" in (refused.details() or "")
        assert "lab/w/b" not in server.copy_state()
        refused = await denied(rita.update({"lab/w/a": 2}))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await walt.locks({"lab/w/a": 10})
        refused = await denied(rita.locks({"lab/w/a": 10}))
        assert "lease right on key 'lab/w/a'" in (refused.details() or "")
        await walt.run("echo")
        refused = await denied(walt.run("secret/reset"))
        assert "call right on command 'secret/reset'" in (refused.details() or "")
        assert await walt.commands() == {"echo"}
        assert await rita.commands() == set()


async def test_unmodified_clients_get_the_anonymous_role(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server, nanover(server, None) as anonymous:
        refused = await denied(anonymous.update({"lab/x": 1}))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        stream = anonymous.subscribe()
        refused = await denied(stream.read())
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    async with (
        auth_server(tmp_path, identities(anonymous="writer")) as server,
        nanover(server, None) as anonymous,
    ):
        assert await anonymous.update({"lab/w/x": 1})
        refused = await denied(anonymous.update({"lab/x": 1}))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_subscription_carries_only_readable_keys(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server, nanover(server, "rita") as rita:
        server.update_state(None, DictionaryChange({"lab/a": 1, "secret/a": 1}))
        stream = rita.subscribe()
        first = await asyncio.wait_for(stream.read(), DEADLINE)
        assert set(first.changed_keys.fields) == {"lab/a"}
        server.update_state(None, DictionaryChange({"secret/a": 2}))
        server.update_state(None, DictionaryChange({"lab/b": 2}, ["secret/a"]))
        second = await asyncio.wait_for(stream.read(), DEADLINE)
        assert set(second.changed_keys.fields) == {"lab/b"}
        stream.cancel()


async def test_a_reload_ends_subscriptions_of_identities_no_longer_allowed(tmp_path: Path) -> None:
    async with (
        auth_server(tmp_path) as server,
        nanover(server, "rita") as rita,
        nanover(server, "ada") as ada,
    ):
        server.update_state(None, DictionaryChange({"lab/first": 0}))
        revoked, kept = rita.subscribe(), ada.subscribe()
        for stream in (revoked, kept):
            await asyncio.wait_for(stream.read(), DEADLINE)
        server.reload_auth(write_identities(tmp_path / "identities.yaml", identities(rita="")))
        server.update_state(None, DictionaryChange({"lab/a": 1}))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(revoked.read(), DEADLINE)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        update = await asyncio.wait_for(kept.read(), DEADLINE)
        assert set(update.changed_keys.fields) == {"lab/a"}
        kept.cancel()


async def test_a_reload_that_changes_read_rights_sends_a_fresh_copy_under_the_new_ones(
    tmp_path: Path,
) -> None:
    narrow = "roles:\n  narrow: {read: ['lab/keep', 'other/']}\n"
    async with auth_server(tmp_path) as server, nanover(server, "rita") as rita:
        server.update_state(
            None, DictionaryChange({"lab/keep": 1, "lab/gone": 2, "other/x": 3, "secret": 4})
        )
        stream = rita.subscribe()
        first = await asyncio.wait_for(stream.read(), DEADLINE)
        assert set(first.changed_keys.fields) == {"lab/keep", "lab/gone"}

        text = identities(rita="narrow").replace("roles:\n", narrow, 1)
        server.reload_auth(write_identities(tmp_path / "identities.yaml", text))
        server.update_state(None, DictionaryChange({"lab/keep": 5}))
        fresh = await asyncio.wait_for(stream.read(), DEADLINE)
        fields = fresh.changed_keys.fields
        assert set(fields) == {"lab/keep", "other/x", "lab/gone"}
        assert fields["lab/keep"].number_value == 5
        assert fields["other/x"].number_value == 3
        assert fields["lab/gone"].WhichOneof("kind") == "null_value"  # NanoVer's removal

        server.update_state(None, DictionaryChange({"lab/gone": 9, "other/y": 1}))
        after = await asyncio.wait_for(stream.read(), DEADLINE)
        assert set(after.changed_keys.fields) == {"other/y"}
        stream.cancel()


async def test_a_token_owns_leases_per_identity(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        async with nanover(server, "walt") as first:
            assert await first.locks({"lab/w/a": 60})
        async with nanover(server, "ada") as other_identity:  # the same token "" as ada
            assert not await other_identity.update({"lab/w/a": "stolen"})
            await other_identity.locks({"lab/w/a": None})  # releases nothing of walt's
            assert [lease.key for lease in server.state.leases()] == ["lab/w/a"]
        async with nanover(server, "walt") as reconnected:  # walt again: still his lease
            assert await reconnected.update({"lab/w/a": "mine"})
            assert server.state.get("lab/w/a") == "mine"
