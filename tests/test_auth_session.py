"""Rights over the session protocol, on real servers: every op allowed and denied."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from statehub import DictionaryChange
from statehub.auth import PermissionDeniedError, UnauthenticatedError
from statehub.auth.permissions import AdminRight
from statehub.endpoints.attach import attach_endpoints
from statehub.endpoints.config import load_config
from support.auth import auth_server, identities, session_as, write_identities
from support.polling import DEADLINE, eventually
from support.raw_session import RawSession, RemoteError, running_server

FIXTURES = Path(__file__).parent / "fixtures"

#: op, arguments walt (writer) may send, arguments walt may not, the right named.
OPS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("get", {"keys": ["lab/x"]}, {"keys": ["lab/x", "secret/x"]}, "read right on key 'secret/x'"),
    (
        "update",
        {"updates": {"lab/w/a": 1}},
        {"updates": {"lab/w/a": 1, "lab/x": 2}},
        "write right on key 'lab/x'",
    ),
    ("update", {"removals": ["lab/w/a"]}, {"removals": ["lab/a"]}, "write right on key 'lab/a'"),
    (
        "leases",
        {"acquire": {"lab/w/a": 10}},
        {"acquire": {"lab/a": 10}},
        "lease right on key 'lab/a'",
    ),
    ("leases", {"release": ["lab/w/a"]}, {"release": ["lab/a"]}, "lease right on key 'lab/a'"),
    (
        "lock",
        {"key": "locks/w/1", "exclusive": True, "timeout": 1},
        {"key": "locks/1", "exclusive": True, "timeout": 1},
        "lock right on lock 'locks/1'",
    ),
    (
        "test_lock",
        {"key": "locks/w/1", "exclusive": True},
        {"key": "locks/1", "exclusive": True},
        "lock right on lock 'locks/1'",
    ),
    (
        "unlock",
        {"key": "locks/w/2", "exclusive": True},
        {"key": "locks/2", "exclusive": True},
        "lock right on lock 'locks/2'",
    ),
    ("call", {"name": "echo"}, {"name": "secret/reset"}, "call right on command 'secret/reset'"),
    ("list_sessions", {}, {}, "admin right 'sessions'"),
    ("clear_leases", {}, {}, "admin right 'clear_leases'"),
]


@pytest.mark.parametrize(("op", "allowed", "denied", "missing"), OPS)
@pytest.mark.parametrize("via", ["hello", "metadata"])
async def test_each_op_is_allowed_or_denied_by_its_right(
    tmp_path: Path, op: str, allowed: dict[str, Any], denied: dict[str, Any], missing: str, via: str
) -> None:
    admin_only = op in ("list_sessions", "clear_leases")
    async with (
        auth_server(tmp_path) as server,
        session_as(server, "ada" if admin_only else "walt", via=via) as permitted,
        session_as(server, "walt" if admin_only else "rita", via=via) as refused,
    ):
        if op == "unlock":  # something to unlock
            await permitted.request("lock", key="locks/w/2", exclusive=True)
        await permitted.request(op, **allowed)
        revision = server.state.revision
        with pytest.raises(RemoteError) as caught:
            await refused.request(op, **(denied if not admin_only else allowed))
        assert caught.value.status == "PERMISSION_DENIED"
        assert isinstance(caught.value.error, PermissionDeniedError)
        assert missing.split(" on ")[0] in str(caught.value.error)
        assert server.state.revision == revision  # nothing of a denied request applied
        if not admin_only:  # the writer's own denial names the key and the right exactly
            with pytest.raises(RemoteError, match=missing.replace("'", ".")):
                await permitted.request(op, **denied)


async def test_no_credential_or_an_unknown_one_is_unauthenticated(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        async with session_as(server, None, hello=False) as anonymous:
            with pytest.raises(RemoteError) as caught:
                await anonymous.request("hello", client="tests")
            assert caught.value.status == "UNAUTHENTICATED"
            assert isinstance(caught.value.error, UnauthenticatedError)
            await asyncio.wait_for(anonymous._reader, DEADLINE)  # the server ended it
        async with session_as(server, None, hello=False) as guesser:
            with pytest.raises(RemoteError, match="not known"):
                await guesser.request("hello", credential="walt-token?")


async def test_a_jwt_from_an_identity_provider_in_metadata(tmp_path: Path) -> None:
    secret = "a-secret-the-lab-idp-shares-0123456789"
    (tmp_path / "idp.secret").write_text(secret)
    text = identities() + "jwt: {algorithms: [HS256], secret_file: idp.secret}\n"
    claims = {"sub": "carol@lab", "roles": ["writer"], "exp": int(time.time()) + 300}
    token = jwt.encode(claims, secret, algorithm="HS256")
    async with auth_server(tmp_path, text) as server:
        metadata = (("authorization", f"Bearer {token}"),)
        options = [("grpc.use_local_subchannel_pool", 1)]
        address = f"127.0.0.1:{server.grpc_port}"
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            carol = RawSession(channel, metadata)
            try:
                assert (await carol.request("hello"))["identity"] == "carol@lab"
                await carol.request("update", updates={"lab/w/x": 1})
                with pytest.raises(RemoteError, match="jwt identity 'carol@lab' lacks"):
                    await carol.request("update", updates={"lab/x": 1})
            finally:
                await carol.close()


async def test_an_anonymous_role_serves_clients_without_a_credential(tmp_path: Path) -> None:
    async with auth_server(tmp_path, identities(anonymous="reader")) as server:
        server.update_state(None, DictionaryChange({"lab/x": 1, "secret": 2}))
        async with session_as(server, None) as anonymous:
            assert (await anonymous.request("get"))["values"] == {"lab/x": 1}
            with pytest.raises(RemoteError, match="an anonymous client lacks the write right"):
                await anonymous.request("update", updates={"lab/x": 2})


async def test_listings_show_only_what_the_identity_may_see(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        server.update_state(None, DictionaryChange({"lab/x": 1, "secret/y": 2}))
        server.update_locks("someone", {"lab/x": None, "secret/y": None})
        async with session_as(server, "walt") as walt, session_as(server, "ada") as ada:
            assert (await walt.request("get"))["values"] == {"lab/x": 1}
            assert [key for key, *_ in (await walt.request("list_leases"))["leases"]] == ["lab/x"]
            assert set((await walt.request("commands"))["commands"]) == {"echo"}
            assert len((await ada.request("get"))["values"]) == 2
            sessions = (await ada.request("list_sessions"))["sessions"]
            assert {(s["identity"], s["method"]) for s in sessions} == {
                ("walt", "token"),
                ("ada", "token"),
            }
            await ada.request("clear_leases")
            assert not server.state.leases()


async def test_a_subscriber_never_receives_a_key_it_may_not_read(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        state = server.state
        state.update_state(None, DictionaryChange({"lab/a": 1, "secret/a": 1, "labx": 1}))
        async with session_as(server, "rita") as rita, session_as(server, "ada") as ada:
            whole = await rita.subscribe(prefix="")
            narrow = await rita.subscribe(prefix="lab")
            for sub in (whole, narrow):
                snapshot = await rita.next_batch(sub)
                assert snapshot["snapshot"] and snapshot["updates"] == {"lab/a": 1}
            await ada.request("update", updates={"secret/a": 2, "labx": 2})
            await ada.request("update", updates={"lab/b": 3}, removals=["secret/a"])
            await ada.request("update", removals=["lab/a"])
            seen: dict[str, Any] = {}
            removed: set[str] = set()
            while "lab/a" not in removed:
                batch = await rita.next_batch(whole)
                seen |= batch["updates"]
                removed |= set(batch["removals"])
            assert set(seen) == {"lab/b"} and removed == {"lab/a"}
            resume_from = snapshot["revision"]
        async with session_as(server, "rita") as again:
            resumed = await again.subscribe(since=resume_from, epoch=server.state.epoch)
            delta = await again.next_batch(resumed)
            assert not delta["snapshot"]
            assert set(delta["updates"]) | set(delta["removals"]) == {"lab/a", "lab/b"}


async def test_subscribing_without_any_read_right_is_denied(tmp_path: Path) -> None:
    text = identities().replace('  reader: {read: ["lab/"]}', '  reader: {lock: ["x"]}')
    async with auth_server(tmp_path, text) as server, session_as(server, "rita") as rita:
        with pytest.raises(RemoteError) as caught:
            await rita.subscribe()
        assert caught.value.status == "PERMISSION_DENIED"
        assert "lacks the read right on any key (subscribe)" in str(caught.value.error)


async def test_force_unlocking_an_endpoint_needs_admin(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        service = attach_endpoints(server, load_config(FIXTURES / "endpoints_providers.yaml"))
        try:
            async with session_as(server, "walt") as walt, session_as(server, "ada") as ada:
                cmd = {"address": "somenode.kv", "method": "lock"}
                await walt.request("call", name="endpoint.cmd", arguments=cmd)
                force = {"address": "somenode.kv", "method": "unlock", "kwargs": {"force": True}}
                with pytest.raises(RemoteError) as caught:
                    await walt.request("call", name="endpoint.cmd", arguments=force)
                assert caught.value.status == "PERMISSION_DENIED"
                assert "admin right 'force_unlock'" in str(caught.value.error)
                assert service.node("somenode.kv").lockout.is_locked
                await ada.request("call", name="endpoint.cmd", arguments=force)
                assert not service.node("somenode.kv").lockout.is_locked
                # Calibration and options are configuration: no request changes them.
                with pytest.raises(RemoteError, match="specifier"):
                    await ada.request(
                        "call",
                        name="endpoint.set",
                        arguments={"address": "somenode.kv.foo.calibration", "value": "x"},
                    )
        finally:
            service.close()


async def test_reloading_keeps_allowed_sessions_with_their_new_rights(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        server.update_state(None, DictionaryChange({"lab/a": 1, "secret/a": 2}))
        async with (
            session_as(server, "rita") as rita,
            session_as(server, "walt") as walt,
            session_as(server, "ada") as ada,
        ):
            sub = await walt.subscribe()
            assert (await walt.next_batch(sub))["updates"] == {"lab/a": 1}
            # rita is gone from the file; walt becomes an admin; ada stays as she was.
            reloaded = write_identities(
                tmp_path / "identities.yaml", identities(rita="", walt="admin")
            )
            server.reload_auth(reloaded)
            ended = await asyncio.wait_for(rita.unmatched.get(), DEADLINE)
            assert ended["error"]["status"] == "UNAUTHENTICATED"
            with pytest.raises(grpc.aio.AioRpcError) as closed:  # the call ends with it too
                await asyncio.wait_for(rita._reader, DEADLINE)
            assert closed.value.code() == grpc.StatusCode.UNAUTHENTICATED
            snapshot = await walt.next_batch(sub)  # now reads more: a fresh snapshot
            assert snapshot["snapshot"] and snapshot["updates"] == {"lab/a": 1, "secret/a": 2}
            await walt.request("update", updates={"secret/a": 3})
            assert (await ada.request("get", keys=["secret/a"]))["values"] == {"secret/a": 3}
            await eventually(lambda: len(server.hub.sessions) == 2)


async def test_without_auth_everyone_may_do_everything(tmp_path: Path) -> None:
    async with running_server() as server, session_as(server, None) as anyone:
        await anyone.request("update", updates={"any/key": 1})
        assert len((await anyone.request("list_sessions"))["sessions"]) == 1
        await anyone.request("call", name="commands/list")
        await anyone.request("clear_leases")


async def test_an_expectation_needs_the_read_right_as_a_conflict_tells_revisions(
    tmp_path: Path,
) -> None:
    # A drop box: walt may write inbox/ but not read it.
    text = identities().replace('write: ["lab/w/"]', 'write: ["lab/w/", "inbox/"]')
    async with auth_server(tmp_path, text) as server, session_as(server, "walt") as walt:
        await walt.request("update", updates={"inbox/1": "note"})  # a blind write is fine
        revision = server.state.revision
        with pytest.raises(RemoteError, match="read right on key 'inbox/1'") as caught:
            await walt.request("update", updates={"inbox/1": "x"}, expect={"inbox/1": None})
        assert caught.value.status == "PERMISSION_DENIED"
        assert server.state.revision == revision
        # Where it may read, the conflict comes back with the key's revision.
        made = (await walt.request("update", updates={"lab/w/a": 1}))["revision"]
        with pytest.raises(RemoteError) as conflict:
            await walt.request("update", updates={"lab/w/a": 2}, expect={"lab/w/a": None})
        assert conflict.value.status == "FAILED_PRECONDITION"
        assert conflict.value.error.current == {"lab/w/a": made}  # type: ignore[attr-defined]
        reply = await walt.request("get", keys=["lab/w/a"], facts=True)
        assert reply["facts"] == {"lab/w/a": [made, made, 1]}


async def test_hello_tells_the_identity_its_rights(tmp_path: Path) -> None:
    """What a client may do, so it can offer only that (the dashboard's read-only mode)."""
    async with auth_server(tmp_path) as server:
        async with session_as(server, None, hello=False) as session:
            reply = await session.request("hello", client="tests", credential="walt-token")
        assert reply["rights"] == {
            "read": ["lab/"],
            "write": ["lab/w/"],
            "lease": ["lab/w/"],
            "lock": ["locks/w/"],
            "call": ["echo*", "endpoint.*"],
            "admin": [],
        }
    async with running_server() as server, session_as(server, None, hello=False) as session:
        reply = await session.request("hello", client="tests")
    assert reply["rights"]["write"] == [""]
    assert reply["rights"]["admin"] == sorted(a.value for a in AdminRight)


async def test_a_subscription_starts_again_with_a_snapshot_when_its_read_rights_change(
    tmp_path: Path,
) -> None:
    async with auth_server(tmp_path) as server:
        server.state.update_state(None, DictionaryChange({"lab/a": 1, "secret/a": 1}))
        async with session_as(server, "rita") as rita:
            sub = await rita.subscribe(prefix="")
            first = await rita.next_batch(sub)
            assert first["snapshot"] and first["updates"] == {"lab/a": 1}
            widened = identities(rita="admin")
            server.reload_auth(write_identities(tmp_path / "identities.yaml", widened))
            again = await rita.next_batch(sub)
            assert again["snapshot"] and again["updates"] == {"lab/a": 1, "secret/a": 1}
            (session,) = server.hub.sessions
            assert session.subscription_count == 1  # the same subscription, restarted
            await rita.request("unsubscribe", sub=sub)
            await eventually(lambda: session.subscription_count == 0)
