"""Rights on the web port: NanoVer's WebSocket protocol at ``/`` under ``--auth``, and TLS
(wss, https, client certificates) on the web port.

The NanoVer client is the bare msgpack one of tests/test_web_nanover.py, adding the HTTP
``Authorization: Bearer`` header a lab's script would send.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from statehub import AsyncClient, DictionaryChange, StateServer
from statehub.client import ClientTls
from statehub.server.tls import ServerTls
from support.auth import TOKENS, auth_server, identities, write_identities
from support.polling import DEADLINE, eventually
from test_web_nanover import NanoverPeer

#: A role for a headset: reads everything, writes its avatar and one folder.
HEADSET_ROLE = '  headset: {read: [""], write: ["avatar.", "lab/w/"]}\n'


def with_headset_role(text: str) -> str:
    return text.replace("roles:\n", "roles:\n" + HEADSET_ROLE, 1)


@asynccontextmanager
async def web_auth_server(tmp_path: Path, text: str | None = None) -> AsyncIterator[StateServer]:
    async with auth_server(tmp_path, text, http_port=0) as server:
        yield server


def bearer(user: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"} if user else {}


@asynccontextmanager
async def nanover_as(
    server: StateServer, user: str | None, headers: dict[str, str] | None = None
) -> AsyncIterator[NanoverPeer]:
    """A NanoVer client presenting ``user``'s token (None: no credential at all)."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"ws://127.0.0.1:{server.http_port}",
            max_msg_size=0,
            headers=headers if headers is not None else bearer(user),
        ) as socket,
    ):
        peer = NanoverPeer(socket)
        try:
            yield peer
        finally:
            await peer.close()


async def refusal(server: StateServer, headers: dict[str, str]) -> tuple[int | None, str]:
    """The close code and reason a NanoVer client connecting with ``headers`` gets."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{server.http_port}", headers=headers) as socket,
    ):
        message = await socket.receive(timeout=DEADLINE)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return socket.close_code, str(message.extra)


async def command_reply(peer: NanoverPeer, name: str, request_id: int) -> dict[str, Any]:
    await peer.request(name, {}, request_id)
    reply = await peer.next_command()
    assert reply["request"]["id"] == request_id
    return reply


def nanover_connections(server: StateServer) -> Any:
    assert server.web is not None
    return server.web.nanover


async def test_anonymous_is_denied_a_write_and_a_command(tmp_path: Path) -> None:
    async with (
        web_auth_server(tmp_path, identities(anonymous="reader")) as server,
        nanover_as(server, None) as anonymous,
    ):
        await anonymous.write({"lab/x": 1})
        error = await anonymous.next_error()
        assert error["type"] == "PermissionDeniedError"
        assert "an anonymous client lacks the write right on key 'lab/x'" in error["message"]
        reply = await command_reply(anonymous, "echo", 1)
        assert "response" not in reply
        assert "lacks the call right on command 'echo'" in reply["exception"]
        listing = await command_reply(anonymous, "commands/list", 2)
        assert listing["response"]["list"] == {} and listing["response"]["commands"] == []
        assert server.copy_state() == {}


async def test_a_credential_that_does_not_authenticate_is_refused_at_connect(
    tmp_path: Path,
) -> None:
    async with web_auth_server(tmp_path) as server:
        code, reason = await refusal(server, {"Authorization": "Bearer not-a-token"})
        assert code == aiohttp.WSCloseCode.POLICY_VIOLATION
        assert "not known to this server" in reason
        # No anonymous role (the default with --auth): a client without one is refused too.
        code, reason = await refusal(server, {})
        assert code == aiohttp.WSCloseCode.POLICY_VIOLATION
        assert "requires a credential" in reason
        await eventually(lambda: not nanover_connections(server).connections)


async def test_a_reader_limited_to_a_prefix_never_receives_another_key(tmp_path: Path) -> None:
    async with web_auth_server(tmp_path) as server:
        server.update_state(None, DictionaryChange({"lab/a": 1, "secret/a": 1}))
        async with nanover_as(server, "rita") as rita, nanover_as(server, "ada") as ada:
            await eventually(lambda: rita.state == {"lab/a": 1})
            assert rita.state_messages[0] == {"updates": {"lab/a": 1}, "removals": []}
            await eventually(lambda: ada.state == {"lab/a": 1, "secret/a": 1})
            room = nanover_connections(server)
            ada_connection = {c for c in room.connections if c.principal.name == "ada"}
            assert room.in_step == ada_connection  # the admin keeps the shared broadcast
            server.update_state(None, DictionaryChange({"secret/b": 2}))
            server.update_state(None, DictionaryChange({"lab/b": 2}, ["secret/a", "lab/a"]))
            server.update_state(None, DictionaryChange({"secret/c": 3}))
            server.update_state(None, DictionaryChange({"lab/last": 3}))
            await eventually(lambda: ada.state == server.copy_state())
            await eventually(lambda: rita.state == {"lab/b": 2, "lab/last": 3})
            for message in rita.state_messages:
                keys = [*message["updates"], *message["removals"]]
                assert all(key.startswith("lab/") for key in keys), message
            assert any("secret/c" in message["updates"] for message in ada.state_messages)


async def test_a_writer_limited_to_a_prefix(tmp_path: Path) -> None:
    async with web_auth_server(tmp_path) as server, nanover_as(server, "walt") as walt:
        server.update_state(None, DictionaryChange({"lab/other": 0}))
        await walt.write({"lab/w/a": 1, "lab/x": 2})
        error = await walt.next_error()
        assert "walt" in error["message"] and "write right on key 'lab/x'" in error["message"]
        await walt.write({}, removals=["lab/other"])
        error = await walt.next_error()
        assert "write right on key 'lab/other'" in error["message"]
        assert server.copy_state() == {"lab/other": 0}  # nothing of either applied
        await walt.write({"lab/w/a": 1})
        await eventually(lambda: walt.state.get("lab/w/a") == 1)
        assert server.copy_state() == {"lab/other": 0, "lab/w/a": 1}
        reply = await command_reply(walt, "echo", 1)
        assert reply["response"] == {}
        reply = await command_reply(walt, "secret/reset", 2)
        assert "lacks the call right on command 'secret/reset'" in reply["exception"]
        listing = await command_reply(walt, "commands/list", 3)
        assert set(listing["response"]["list"]) == {"echo"}


async def test_leaving_removes_only_the_users_keys_it_may_write(tmp_path: Path) -> None:
    text = with_headset_role(identities(walt="headset"))
    async with web_auth_server(tmp_path, text) as server:
        async with nanover_as(server, "walt") as headset:
            await headset.write({"avatar.u1": {"x": 1}, "lab/w/pointer.u1": 1})
            await eventually(lambda: "lab/w/pointer.u1" in server.copy_state())
            # A key of the same user the headset may not write (set by the server).
            server.update_state(None, DictionaryChange({"selection.u1": [1, 2]}))
            await eventually(lambda: "selection.u1" in headset.state)
        await eventually(lambda: "avatar.u1" not in server.copy_state())
        assert server.copy_state() == {"selection.u1": [1, 2]}


async def test_registering_a_command_needs_the_admin_right(tmp_path: Path) -> None:
    async with (
        web_auth_server(tmp_path) as server,
        nanover_as(server, "walt") as walt,
        nanover_as(server, "ada") as ada,
    ):
        await walt.send({"command": {"register": {"name": "echo-walt", "arguments": {}}}})
        error = await walt.next_error()
        assert "not registered" in error["message"]
        assert "lacks the admin right 'register_commands'" in error["message"]
        await ada.send({"command": {"register": {"name": "echo-ada", "arguments": {}}}})
        await eventually(lambda: "echo-ada" in server.hub.commands.commands)
        assert "echo-walt" not in server.hub.commands.commands
        # walt may call echo*: the call is forwarded to ada's client, its answer comes back.
        await walt.request("echo-ada", {"n": 1}, 7)
        forwarded = await ada.next_command()
        assert forwarded["request"]["name"] == "echo-ada"
        await ada.send({"command": {"request": forwarded["request"], "response": {"n": 1}}})
        reply = await walt.next_command()
        assert reply == {
            "request": {"name": "echo-ada", "arguments": {"n": 1}, "id": 7},
            "response": {"n": 1},
        }
        # A reload that takes the admin right away ends ada's registration.
        server.reload_auth(write_identities(tmp_path / "identities.yaml", identities(ada="writer")))
        assert "echo-ada" not in server.hub.commands.commands


async def test_a_reload_narrowing_rights_sends_a_fresh_copy_then_ends(tmp_path: Path) -> None:
    path = tmp_path / "identities.yaml"
    async with web_auth_server(tmp_path, identities(rita="admin")) as server:
        server.update_state(None, DictionaryChange({"lab/a": 1, "secret/a": 1}))
        async with nanover_as(server, "rita") as rita, nanover_as(server, "walt") as walt:
            await eventually(lambda: rita.state == {"lab/a": 1, "secret/a": 1})
            room = nanover_connections(server)
            await eventually(lambda: len(room.in_step) == 1)  # rita: walt reads only lab/
            server.update_state(None, DictionaryChange({"lab/gone": 0}))
            await eventually(lambda: "lab/gone" in rita.state)
            # Removed, and the rights narrowed before the broadcast could tell rita: the
            # fresh copy removes it too.
            server.update_state(None, DictionaryChange(removals=["lab/gone"]))
            server.reload_auth(write_identities(path, identities()))  # rita only reads lab/
            await eventually(lambda: rita.state == {"lab/a": 1})
            assert rita.state_messages[-1] == {
                "updates": {"lab/a": 1},
                "removals": ["lab/gone", "secret/a"],
            }
            assert not room.in_step
            server.update_state(None, DictionaryChange({"secret/b": 2}))
            server.update_state(None, DictionaryChange({"lab/b": 2}))
            await eventually(lambda: rita.state == {"lab/a": 1, "lab/b": 2})
            # walt's rights did not change: it got no fresh copy, and still writes lab/w/.
            # (a fresh copy would have sent lab/a, unchanged since the snapshot, again).
            assert [m for m in walt.state_messages if "lab/a" in m["updates"]] == [
                {"updates": {"lab/a": 1}, "removals": []}
            ]
            await walt.write({"lab/w/x": 1})
            await eventually(lambda: walt.state.get("lab/w/x") == 1)
            server.reload_auth(write_identities(path, identities(rita="admin")))  # widened
            await eventually(lambda: rita.state == server.copy_state())
            await eventually(lambda: len(room.in_step) == 1)  # back on the shared broadcast
            assert next(iter(room.in_step)).principal.name == "rita"
            server.reload_auth(write_identities(path, identities(rita="")))  # rita removed
            error = await rita.next_error()
            assert error["type"] == "UnauthenticatedError"
            await eventually(lambda: rita.socket.closed)
            assert rita.socket.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
            await eventually(lambda: len(room.connections) == 1)
            await walt.write({"lab/w/y": 2})
            await eventually(lambda: walt.state.get("lab/w/y") == 2)


# -- TLS on the web port -------------------------------------------------------------------


@dataclass
class WebPki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def web_pki(tmp_path_factory: pytest.TempPathFactory) -> WebPki:
    folder = tmp_path_factory.mktemp("web-pki")
    ca = trustme.CA()
    paths = {name: folder / f"{name}.pem" for name in WebPki.__dataclass_fields__}
    ca.cert_pem.write_to_path(paths["ca"])
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.private_key_pem.write_to_path(paths["server_key"])
    with paths["server_cert"].open("wb") as chain:
        for pem in server.cert_chain_pems:
            chain.write(pem.bytes())
    client = ca.issue_cert("headset-1.lab")
    client.private_key_pem.write_to_path(paths["client_key"])
    client.cert_chain_pems[0].write_to_path(paths["client_cert"])
    return WebPki(**paths)


def client_ssl(pki: WebPki, *, certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


async def test_the_web_port_serves_https_and_wss_when_the_server_has_tls(
    web_pki: WebPki, tmp_path: Path
) -> None:
    tls = ServerTls.from_files(web_pki.server_cert, web_pki.server_key)
    async with auth_server(tmp_path, tls=tls, http_port=0) as server:
        base = f"127.0.0.1:{server.http_port}"
        context = client_ssl(web_pki, certificate=False)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://{base}/healthz", ssl=context) as response:
                assert response.status == 200
            async with http.get(f"https://{base}/", ssl=context) as page:
                # The dashboard's page (503 naming `make dashboard` where it is not built).
                assert page.status in (200, 503)
                assert "dashboard" in (await page.text()).lower()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.get(f"https://{base}/healthz"):  # system CAs do not know ours
                    pass
        # The session protocol over wss, as the dashboard uses it.
        async with AsyncClient(
            f"wss://{base}", tls=ClientTls(ca_file=web_pki.ca), credential=TOKENS["walt"]
        ) as client:
            await client.set("lab/w/over-wss", 1)
            assert await client.get("lab/w/over-wss") == 1
            (session,) = server.hub.sessions
            assert (session.peer.transport, session.principal.name) == ("websocket", "walt")


async def test_client_certificates_on_the_web_port_identify_clients(
    web_pki: WebPki, tmp_path: Path
) -> None:
    tls = ServerTls.from_files(web_pki.server_cert, web_pki.server_key, web_pki.ca)
    text = identities() + "  headset: {roles: [writer], cert_names: [headset-1.lab]}\n"
    async with auth_server(tmp_path, text, tls=tls, http_port=0) as server:
        context = client_ssl(web_pki, certificate=True)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"wss://127.0.0.1:{server.http_port}", ssl=context) as socket,
        ):
            peer = NanoverPeer(socket)
            try:
                await peer.write({"lab/w/from-headset": 1})
                await eventually(lambda: peer.state.get("lab/w/from-headset") == 1)
                (connection,) = nanover_connections(server).connections
                assert (connection.principal.name, connection.principal.method) == (
                    "headset",
                    "certificate",
                )
            finally:
                await peer.close()
        mine = ClientTls(
            ca_file=web_pki.ca, cert_file=web_pki.client_cert, key_file=web_pki.client_key
        )
        async with AsyncClient(f"wss://127.0.0.1:{server.http_port}", tls=mine) as client:
            await client.set("lab/w/session", 1)
            (session,) = server.hub.sessions
            assert session.principal.name == "headset"
