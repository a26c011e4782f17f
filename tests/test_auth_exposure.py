"""What one identity may learn about the server and the others under ``--auth``.

``/metrics`` and ``/readyz`` need the admin right ``metrics`` (``/healthz`` stays open);
lock listings name other sessions only to identities that may see every session; a JWT
cannot take the name of another identity. Real servers, real HTTP and session clients.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import jwt
import pytest
from click.testing import CliRunner

from statehub import Client, StateServer
from statehub.auth import Authenticator, IdentitiesFileError, UnauthenticatedError, token_digest
from statehub.auth.authenticator import Credentials
from statehub.cli import main
from support.auth import TOKENS, auth_server, identities, session_as
from support.raw_session import RawSession, RemoteError

#: A Prometheus scraper: the admin right ``metrics`` and nothing else.
SCRAPER = "prometheus-token"


def with_scraper(text: str) -> str:
    text = text.replace("roles:\n", "roles:\n  scraper: {admin: [metrics]}\n", 1)
    user = f"  prom: {{roles: [scraper], token_sha256: ['{token_digest(SCRAPER)}']}}\n"
    return text.replace("users:\n", "users:\n" + user, 1)


async def fetch(server: StateServer, path: str, token: str | None) -> tuple[int, str, str]:
    """Status, body and ``WWW-Authenticate`` of a GET of ``path`` with a bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}{path}", headers=headers) as response,
    ):
        return response.status, await response.text(), response.headers.get("WWW-Authenticate", "")


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
async def test_metrics_and_readiness_need_the_metrics_right(tmp_path: Path, path: str) -> None:
    async with auth_server(tmp_path, with_scraper(identities()), http_port=0) as server:
        status, body, challenge = await fetch(server, path, None)
        assert (status, challenge) == (401, "Bearer")
        assert path in body and "requires a credential" in body
        status, body, _ = await fetch(server, path, "not-a-token")
        assert status == 401 and "not known" in body
        status, body, _ = await fetch(server, path, TOKENS["walt"])
        assert status == 403
        assert "token identity 'walt' lacks the admin right 'metrics'" in body
        for allowed in (SCRAPER, TOKENS["ada"]):  # the right alone, and admin "*"
            status, body, _ = await fetch(server, path, allowed)
            assert status == 200
            assert ("statehub_sessions" in body) if path == "/metrics" else ('"ready"' in body)
        status, body, _ = await fetch(server, "/healthz", None)  # liveness probes stay open
        assert status == 200 and "alive" in body


async def test_an_anonymous_role_without_the_right_is_refused_and_one_with_it_reads(
    tmp_path: Path,
) -> None:
    async with auth_server(tmp_path, identities(anonymous="reader"), http_port=0) as server:
        status, body, _ = await fetch(server, "/metrics", None)
        assert status == 403 and "an anonymous client lacks the admin right 'metrics'" in body
    async with auth_server(
        tmp_path, with_scraper(identities(anonymous="scraper")), http_port=0
    ) as server:
        assert (await fetch(server, "/metrics", None))[0] == 200


async def test_the_metrics_right_shows_no_sessions(tmp_path: Path) -> None:
    async with (
        auth_server(tmp_path, with_scraper(identities())) as server,
        session_as(server, "ada", hello=False) as prom,
    ):
        await prom.request("hello", credential=SCRAPER)
        with pytest.raises(RemoteError, match="lacks the admin right 'sessions'"):
            await prom.request("list_sessions")


@asynccontextmanager
async def named_session(server: StateServer, user: str, client: str) -> AsyncIterator[RawSession]:
    async with session_as(server, user, hello=False) as session:
        await session.request("hello", client=client, credential=TOKENS[user])
        yield session


async def test_lock_listings_name_other_sessions_only_to_those_who_may_see_sessions(
    tmp_path: Path,
) -> None:
    async with (
        auth_server(tmp_path) as server,
        named_session(server, "walt", "walt-laptop") as walt,
        named_session(server, "walt", "walt-robot") as robot,
        named_session(server, "ada", "ada-console") as ada,
    ):
        for session in (walt, robot):
            await session.request("lock", key="locks/w/shared", exclusive=False)
        sessions = (await ada.request("list_sessions"))["sessions"]
        ids = {entry["client"]: entry["session"] for entry in sessions}

        (seen,) = (await walt.request("list_locks"))["locks"]
        assert seen["mine"] and seen["mode"] == "shared"
        named = sorted((h["session"], h["client"], h["owner"]) for h in seen["holders"])
        assert named == [("", "", ""), (ids["walt-laptop"], "walt-laptop", "")]
        assert all("identity" not in holder for holder in seen["holders"])
        listing = str(await walt.request("list_locks"))
        assert ids["walt-robot"] not in listing and "walt-robot" not in listing
        await robot.request("leases", acquire={"lab/w/x": 30})
        leases = await walt.request("list_leases")
        assert leases["holders"] == {"lab/w/x": {"session": "", "client": ""}}
        admin_leases = await ada.request("list_leases")
        assert admin_leases["holders"]["lab/w/x"]["client"] == "walt-robot"

        (admin_view,) = (await ada.request("list_locks"))["locks"]
        assert not admin_view["mine"]
        assert {(h["session"], h["client"]) for h in admin_view["holders"]} == {
            (ids["walt-laptop"], "walt-laptop"),
            (ids["walt-robot"], "walt-robot"),
        }


JWT_SECRET = "a-secret-the-lab-idp-shares-0123456789"


def jwt_identities(tmp_path: Path) -> str:
    (tmp_path / "idp.secret").write_text(JWT_SECRET)
    return identities(anonymous="reader") + "jwt: {algorithms: [HS256], secret_file: idp.secret}\n"


def signed(sub: str) -> str:
    claims = {"sub": sub, "roles": ["admin"], "exp": int(time.time()) + 300}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@pytest.mark.parametrize("sub", ["walt", "anonymous"])
def test_a_jwt_cannot_claim_the_name_of_another_identity(tmp_path: Path, sub: str) -> None:
    (tmp_path / "identities.yaml").write_text(jwt_identities(tmp_path))
    auth = Authenticator.from_file(tmp_path / "identities.yaml")
    with pytest.raises(UnauthenticatedError, match=f"names {sub!r}.*cannot be two identities"):
        auth.authenticate(Credentials(bearer=signed(sub)))
    assert auth.authenticate(Credentials(bearer=signed("walt@idp"))).name == "walt@idp"
    assert auth.authenticate(Credentials(bearer=TOKENS["walt"])).method == "token"


async def test_a_session_with_a_jwt_naming_a_user_is_refused(tmp_path: Path) -> None:
    async with (
        auth_server(tmp_path, jwt_identities(tmp_path)) as server,
        session_as(server, "walt", hello=False) as impostor,
    ):
        with pytest.raises(RemoteError) as caught:
            await impostor.request("hello", credential=signed("ada"))
        assert caught.value.status == "UNAUTHENTICATED" and "'ada'" in str(caught.value)
        assert all(session.principal.name != "ada" for session in server.hub.sessions)


def test_no_user_may_be_named_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "identities.yaml"
    path.write_text(f"users: {{anonymous: {{roles: [], token_sha256: ['{'0' * 64}']}}}}\n")
    with pytest.raises(IdentitiesFileError, match=r"users\.anonymous: 'anonymous' is the identity"):
        Authenticator.from_file(path)


def test_the_locks_command_shows_a_hidden_holder_as_another_session(tmp_path: Path) -> None:
    (tmp_path / "identities.yaml").write_text(identities())
    auth = Authenticator.from_file(tmp_path / "identities.yaml")
    server = StateServer(address="127.0.0.1", port=0, auth=auth).start_in_thread()
    try:
        with (
            Client("127.0.0.1", server.port, name="pump-robot", credential=TOKENS["walt"]) as robot,
            robot.get_lock("locks/w/pump"),
        ):
            address = ["-h", "127.0.0.1", "-p", str(server.port)]
            as_walt = {"STATEHUB_CREDENTIAL": TOKENS["walt"]}
            table = CliRunner().invoke(main, ["locks", *address], env=as_walt)
            assert table.exit_code == 0, table.output
            assert "another session" in table.stdout and "pump-robot" not in table.stdout
            as_ada = {"STATEHUB_CREDENTIAL": TOKENS["ada"]}
            admin_table = CliRunner().invoke(main, ["locks", *address], env=as_ada)
            assert "pump-robot" in admin_table.stdout
    finally:
        server.close()
