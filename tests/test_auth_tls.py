"""TLS and mutual TLS on a real server, with a CA and certificates made for the test."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from statehub.auth import UnauthenticatedError
from statehub.client import AsyncClient, ClientTls, ConnectionLostError
from statehub.server.tls import ServerTls
from support.auth import TOKENS, auth_server, identities
from support.raw_session import running_server


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path
    unnamed_cert: Path
    unnamed_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    paths = {name: folder / f"{name}.pem" for name in Pki.__dataclass_fields__}
    ca.cert_pem.write_to_path(paths["ca"])
    other.cert_pem.write_to_path(paths["other_ca"])
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.private_key_pem.write_to_path(paths["server_key"])
    with paths["server_cert"].open("wb") as chain:
        for pem in server.cert_chain_pems:
            chain.write(pem.bytes())
    for who, issuer, name in (
        ("client", ca, "headset-1.lab"),
        ("stranger", other, "x.lab"),
        ("unnamed", ca, "nobody.lab"),
    ):
        cert = issuer.issue_cert(name)
        cert.private_key_pem.write_to_path(paths[f"{who}_key"])
        cert.cert_chain_pems[0].write_to_path(paths[f"{who}_cert"])
    return Pki(**paths)


def server_tls(pki: Pki, *, mutual: bool = False) -> ServerTls:
    return ServerTls.from_files(pki.server_cert, pki.server_key, pki.ca if mutual else None)


async def test_a_client_trusting_the_ca_connects_with_the_tls_url(pki: Pki) -> None:
    async with running_server(tls=server_tls(pki)) as server:
        url = f"statehubs://127.0.0.1:{server.port}"
        async with AsyncClient(url, tls=ClientTls(ca_file=pki.ca), reconnect=False) as client:
            await client.set("k", 1)
            assert await client.get("k") == 1


@pytest.mark.parametrize("client_tls", ["wrong-ca", "plain"])
async def test_a_wrong_ca_or_no_tls_is_refused(pki: Pki, client_tls: str) -> None:
    async with running_server(tls=server_tls(pki)) as server:
        tls = ClientTls(ca_file=pki.other_ca) if client_tls == "wrong-ca" else None
        client = AsyncClient("127.0.0.1", server.port, tls=tls, reconnect=False, connect_timeout=3)
        with pytest.raises(ConnectionLostError):
            await client.connect()
        await client.close()
        assert not server.hub.sessions


async def test_client_certificates_map_to_users(pki: Pki, tmp_path: Path) -> None:
    text = identities() + "  headset: {roles: [writer], cert_names: [headset-1.lab]}\n"
    async with auth_server(tmp_path, text, tls=server_tls(pki, mutual=True)) as server:
        mine = ClientTls(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
        async with AsyncClient("127.0.0.1", server.port, tls=mine, reconnect=False) as headset:
            assert headset._conn is not None
            session = next(iter(server.hub.sessions))
            assert (session.principal.name, session.principal.method) == (
                "headset",
                "certificate",
            )
            await headset.set("lab/w/x", 1)
        # A token presented over the same TLS wins over the certificate.
        async with AsyncClient(
            "127.0.0.1", server.port, tls=mine, credential=TOKENS["ada"], reconnect=False
        ):
            assert {s.principal.name for s in server.hub.sessions} == {"ada"}
        # A certificate of the CA that names no user: the anonymous role, here none.
        named = ClientTls(ca_file=pki.ca, cert_file=pki.unnamed_cert, key_file=pki.unnamed_key)
        unnamed = AsyncClient("127.0.0.1", server.port, tls=named, reconnect=False)
        with pytest.raises(UnauthenticatedError, match="names no user"):
            await unnamed.connect()
        await unnamed.close()


async def test_mutual_tls_refuses_clients_without_a_certificate_of_its_ca(pki: Pki) -> None:
    async with running_server(tls=server_tls(pki, mutual=True)) as server:
        for tls in (
            ClientTls(ca_file=pki.ca),
            ClientTls(ca_file=pki.ca, cert_file=pki.stranger_cert, key_file=pki.stranger_key),
        ):
            client = AsyncClient(
                "127.0.0.1", server.port, tls=tls, reconnect=False, connect_timeout=3
            )
            with pytest.raises(ConnectionLostError):
                await client.connect()
            await client.close()


def test_the_same_files_make_an_ssl_context_for_other_ports(pki: Pki) -> None:
    assert server_tls(pki).ssl_context().verify_mode == ssl.CERT_NONE
    assert server_tls(pki, mutual=True).ssl_context().verify_mode == ssl.CERT_REQUIRED


def test_bad_tls_files_are_named(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nowhere\.pem"):
        ServerTls.from_files(tmp_path / "nowhere.pem", pki.server_key)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ValueError, match=r"junk\.pem.* is not PEM"):
        ServerTls.from_files(pki.server_cert, tmp_path / "junk.pem")
