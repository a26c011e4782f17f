"""Force-release: an admin takes a lock or lease away, and the holder sees it lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from statehub import AsyncClient, Client
from statehub.cli import main
from statehub.errors import LeaseLostError, LockFailedError, LockLostError
from statehub.serving.state_server import StateServer
from support.auth import auth_server, session_as
from support.client_servers import threaded_server
from support.polling import DEADLINE, eventually
from support.raw_session import RemoteError


class Lost:
    """Records a client's ``locks_lost`` and ``leases_lost`` events."""

    def __init__(self, client: AsyncClient) -> None:
        self.locks: list[Any] = []
        self.leases: list[Any] = []
        client.locks_lost.add_callback(lambda keys: self.locks.extend(keys))
        client.leases_lost.add_callback(lambda keys: self.leases.extend(keys))


async def test_a_force_released_lock_ends_the_holders_block_and_goes_to_the_waiter(
    server: StateServer,
) -> None:
    async with (
        AsyncClient("127.0.0.1", server.port, name="hung worker") as holder,
        AsyncClient("127.0.0.1", server.port, name="next worker") as waiter,
        AsyncClient("127.0.0.1", server.port, name="operator") as admin,
    ):
        lost = Lost(holder)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with holder.get_lock("lab.pump"):
                holding.set()
                await release.wait()

        held = asyncio.create_task(hold())
        await asyncio.wait_for(holding.wait(), DEADLINE)
        waiting = asyncio.create_task(waiter.acquire_lock("lab.pump", "next"))
        await eventually(lambda: server.locks.holdings().result()[0].waiting == 1)

        released = await admin.force_release("lock", "lab.pump")

        assert [(r.session, r.told) for r in released] == [(holder.session, True)]
        granted = await asyncio.wait_for(waiting, DEADLINE)
        assert granted.key == "lab.pump"
        await eventually(lambda: lost.locks == ["lab.pump"])
        release.set()
        with pytest.raises(LockFailedError, match=r"force-released by operator \(anyone\)"):
            await asyncio.wait_for(held, DEADLINE)


async def test_a_force_released_lease_is_lost_to_its_holder_and_free_for_others(
    server: StateServer,
) -> None:
    async with (
        AsyncClient("127.0.0.1", server.port, name="headset") as holder,
        AsyncClient("127.0.0.1", server.port, name="other") as other,
        AsyncClient("127.0.0.1", server.port, name="operator") as admin,
    ):
        lost = Lost(holder)
        assert await holder.attempt_update_locks({"scene.avatar": 60})
        assert not await other.attempt_update_locks({"scene.avatar": 60})

        released = await admin.force_release("lease", "scene.avatar")

        assert [(r.session, r.told) for r in released] == [(holder.session, True)]
        await eventually(lambda: lost.leases == ["scene.avatar"])
        assert await other.attempt_update_locks({"scene.avatar": 60})


async def test_force_releasing_what_no_one_holds_says_so(client: AsyncClient) -> None:
    with pytest.raises(KeyError, match="no one holds the lock on 'free'"):
        await client.force_release("lock", "free")
    with pytest.raises(KeyError, match="'free' is not leased"):
        await client.force_release("lease", "free")
    with pytest.raises(ValueError, match="'kind' must be 'lock' or 'lease', got 'key'"):
        await client.force_release("key", "free")


async def test_only_the_admin_right_force_unlock_may_force_release(tmp_path: Path) -> None:
    async with (
        auth_server(tmp_path) as server,
        session_as(server, "walt") as walt,
        session_as(server, "ada") as ada,
    ):
        await walt.request("lock", key="locks/w/1", exclusive=True)
        with pytest.raises(RemoteError) as caught:
            await walt.request("force_release", kind="lock", key="locks/w/1")
        assert caught.value.status == "PERMISSION_DENIED"
        assert "admin right 'force_unlock'" in str(caught.value.error)
        assert (await server.locks.holdings())[0].holders  # still held

        reply = await ada.request("force_release", kind="lock", key="locks/w/1")

        assert reply["released"][0]["told"] is True
        told = await asyncio.wait_for(walt.unmatched.get(), DEADLINE)
        assert told["lost"] == {
            "leases": [],
            "locks": [{"key": "locks/w/1", "owner": "", "exclusive": True}],
            "reason": "force-released by tests (ada)",
        }
        assert await server.locks.holdings() == []


@pytest.fixture
def threaded() -> Iterator[StateServer]:
    running = threaded_server()
    try:
        yield running
    finally:
        running.close()


def test_the_cli_force_releases_a_lock_and_a_lease(threaded: StateServer) -> None:
    def cli(*args: str) -> str:
        result = CliRunner().invoke(main, [*args, "-h", "127.0.0.1", "-p", str(threaded.port)])
        assert result.exit_code == 0, result.output
        return result.stdout

    with Client("127.0.0.1", threaded.port, name="holder") as holder:
        assert holder.attempt_update_locks({"scene.a": 60})
        taken = pytest.raises(LockFailedError, match="force-released by statehub-cli")
        with taken, holder.get_lock("lab.pump"):
            said = cli("locks", "--force-release", "lab.pump")
            assert "force-released the lock on 'lab.pump'" in said and "(told)" in said
        assert "force-released the lease on 'scene.a'" in cli(
            "leases", "--force-release", "scene.a"
        )
        assert threaded.state.leases() == []
    refused = CliRunner().invoke(
        main, ["locks", "--force-release", "lab.pump", "-h", "127.0.0.1", "-p", str(threaded.port)]
    )
    assert refused.exit_code == 1 and "no one holds the lock on 'lab.pump'" in refused.output


@pytest.mark.parametrize("scheme", ["statehub", "statehub+grpc"])
def test_a_blocking_client_is_told_on_either_transport(threaded: StateServer, scheme: str) -> None:
    port = threaded.tcp_port if scheme == "statehub" else threaded.grpc_port
    lost: list[tuple[str, list[str]]] = []
    with (
        Client(f"{scheme}://127.0.0.1:{port}", name="holder") as holder,
        Client("127.0.0.1", threaded.port, name="operator") as admin,
    ):
        holder.leases_lost.add_callback(lambda keys: lost.append(("leases", keys)))
        holder.locks_lost.add_callback(lambda keys: lost.append(("locks", keys)))
        assert holder.attempt_update_locks({"scene.b": 60})
        taken = pytest.raises(LockLostError, match=r"force-released by operator \(anyone\)")
        with taken, holder.get_lock("lab.valve"):
            admin.force_release("lock", "lab.valve")
            holder.get("anything")  # reads the lost message, as any call would
        admin.force_release("lease", "scene.b")
        holder.get("anything")
        with pytest.raises(LeaseLostError, match=r"'scene\.b' was lost"):
            holder.set("scene.b", 1)
        holder.set("scene.b", 2)  # told once: the next write is an ordinary one
        assert lost == [("locks", ["lab.valve"]), ("leases", ["scene.b"])]


async def test_over_redis_a_lease_of_another_server_goes_and_a_lock_holder_is_told(
    tmp_path: Path,
) -> None:
    from test_redis_commands import two_servers

    async with (
        two_servers(tmp_path) as (_, server_a, server_b),
        AsyncClient("127.0.0.1", server_a.port, name="on-a") as holder,
        AsyncClient("127.0.0.1", server_b.port, name="operator-on-b") as admin,
    ):
        assert await holder.attempt_update_locks({"scene.avatar": 60})
        released = await admin.force_release("lease", "scene.avatar")
        # Server B cannot reach A's session to tell it: the reply says so.
        assert [(r.session, r.told) for r in released] == [("", False)]
        assert [lease.key for lease in await holder.leases()] == []
        taken = pytest.raises(LockLostError, match=r"force-released by on-a \(anyone\)")
        with taken:
            async with holder.get_lock("lab.pump"):
                released = await holder.force_release("lock", "lab.pump")
                assert [(r.owner, r.told) for r in released] == [("on-a", True)]
        assert await admin.locks() == []


# -- the subscription's stream is marked --------------------------------------------------


async def test_a_stream_marks_the_change_after_a_force_release(server: StateServer) -> None:
    async with (
        AsyncClient("127.0.0.1", server.port, name="headset") as holder,
        AsyncClient("127.0.0.1", server.port, name="operator") as admin,
    ):
        stream = holder.subscribe(prefix="scene.")
        assert (await asyncio.wait_for(anext(stream), DEADLINE)).holds_lost is None  # snapshot
        told = Lost(holder)
        assert await holder.attempt_update_locks({"scene.avatar": 60})
        with pytest.raises(LockLostError):
            async with holder.get_lock("lab.pump"):
                await admin.force_release("lease", "scene.avatar")
                await admin.force_release("lock", "lab.pump")
                await eventually(lambda: told.locks == ["lab.pump"])
        change = await asyncio.wait_for(anext(stream), DEADLINE)
        lost = change.holds_lost
        assert lost is not None  # both losses, in the one change the consumer takes next
        assert lost.leases == ("scene.avatar",) and lost.locks == ("lab.pump",)
        assert "force-released by operator" in lost.reason
        assert change.updates == {} and not change.snapshot  # no data came with it
        await admin.set("scene.x", 1)
        after = await asyncio.wait_for(anext(stream), DEADLINE)
        assert after.updates == {"scene.x": 1} and after.holds_lost is None  # told once
        await stream.aclose()


async def test_a_stream_marks_the_change_after_the_session_ended(server: StateServer) -> None:
    async with AsyncClient("127.0.0.1", server.port) as holder:
        stream = holder.subscribe(prefix="scene.")
        await asyncio.wait_for(anext(stream), DEADLINE)
        assert await holder.attempt_update_locks({"scene.avatar": 60})
        first = holder.session
        server.hub.end_sessions()  # the server ends the session: the lease goes with it
        change = await asyncio.wait_for(anext(stream), DEADLINE)
        assert change.holds_lost is not None
        assert change.holds_lost.leases == ("scene.avatar",) and change.holds_lost.locks == ()
        assert change.holds_lost.reason.startswith("the session ended: ")
        await holder.wait_connected(DEADLINE)  # the stream resumes on the new session
        assert holder.session != first
        await holder.set("scene.y", 1)
        after = await asyncio.wait_for(anext(stream), DEADLINE)
        while "scene.y" not in after.updates:
            after = await asyncio.wait_for(anext(stream), DEADLINE)
        assert after.holds_lost is None
        await stream.aclose()


@pytest.mark.parametrize("scheme", ["statehub", "statehub+grpc"])
def test_a_blocking_stream_marks_the_change_after_a_force_release(
    threaded: StateServer, scheme: str
) -> None:
    port = threaded.tcp_port if scheme == "statehub" else threaded.grpc_port
    with (
        Client(f"{scheme}://127.0.0.1:{port}", name="holder") as holder,
        Client("127.0.0.1", threaded.port, name="operator") as admin,
    ):
        changes = holder.subscribe(prefix="scene.")
        assert next(changes).holds_lost is None  # the snapshot
        assert holder.attempt_update_locks({"scene.b": 60})
        admin.force_release("lease", "scene.b")
        change = next(changes)  # the subscription's reading thread got the lost message
        assert change.holds_lost is not None
        assert change.holds_lost.leases == ("scene.b",) and change.holds_lost.locks == ()
        assert "force-released by operator" in change.holds_lost.reason
        admin.set("scene.c", 1)
        after = next(changes)
        assert after.updates == {"scene.c": 1} and after.holds_lost is None
        changes.close()
