"""The identities file: what it grants, and bad files refused naming file, entry and field."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from statehub.auth import (
    Authenticator,
    Credentials,
    IdentitiesFileError,
    Right,
    UnauthenticatedError,
    token_digest,
)
from statehub.cli import main

IDENTITIES = f"""
roles:
  viewer: {{read: [""]}}
  instrument:
    read: ["lab/"]
    write: ["lab/instrument/"]
    lease: ["lab/instrument/"]
    lock: ["instrument/"]
    call: ["endpoint.*"]
  operator: {{read: [""], write: [""], admin: ["*"]}}
users:
  alice: {{roles: [operator], token_sha256: ["{token_digest("alice-token")}"]}}
  headset: {{roles: [instrument], cert_names: ["headset-1.lab"]}}
"""


def write(tmp_path: Path, text: str, name: str = "identities.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_tokens_and_certificates_map_to_their_roles(tmp_path: Path) -> None:
    auth = Authenticator.from_file(write(tmp_path, IDENTITIES))
    alice = auth.authenticate(Credentials(bearer="alice-token"))
    assert (alice.name, alice.method) == ("alice", "token")
    assert alice.permissions.allows(Right.WRITE, "anything")
    headset = auth.authenticate(Credentials(cert_names=("other", "headset-1.lab")))
    assert (headset.name, headset.method) == ("headset", "certificate")
    assert headset.permissions.allows(Right.WRITE, "lab/instrument/x")
    assert not headset.permissions.allows(Right.WRITE, "lab/other")
    assert headset.permissions.allows(Right.CALL, "endpoint.get")
    assert not headset.permissions.allows(Right.CALL, "commands/list")


def test_unknown_tokens_and_missing_credentials_are_unauthenticated(tmp_path: Path) -> None:
    auth = Authenticator.from_file(write(tmp_path, IDENTITIES))
    with pytest.raises(UnauthenticatedError, match="not known"):
        auth.authenticate(Credentials(bearer="alice-token!"))
    with pytest.raises(UnauthenticatedError, match="requires a credential"):
        auth.authenticate(Credentials())
    with pytest.raises(UnauthenticatedError, match="stranger"):
        auth.authenticate(Credentials(cert_names=("stranger",)))


def test_the_anonymous_role_is_configurable(tmp_path: Path) -> None:
    auth = Authenticator.from_file(write(tmp_path, IDENTITIES + "anonymous: {roles: [viewer]}\n"))
    anonymous = auth.authenticate(Credentials())
    assert anonymous.method == "anonymous"
    assert anonymous.permissions.allows(Right.READ, "x")
    assert not anonymous.permissions.allows(Right.WRITE, "x")


def test_toml_files_are_read_too(tmp_path: Path) -> None:
    text = f"""
[roles.viewer]
read = [""]
[users.bob]
roles = ["viewer"]
token_sha256 = "{token_digest("bob-token")}"
"""
    auth = Authenticator.from_file(write(tmp_path, text, "identities.toml"))
    assert auth.authenticate(Credentials(bearer="bob-token")).name == "bob"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("users: {bob: {roles: [nobody]}}", "users.bob.roles.0: unknown role 'nobody'"),
        ("users: {bob: {roles: [], token_sha256: [secret]}}", "users.bob.token_sha256"),
        ("roles: {r: {raed: ['']}}", "roles.r.raed: unknown field"),
        ("roles: {r: {admin: [everything]}}", "roles.r.admin.0"),
        ("users: {bob: {}}", "users.bob.roles: required field is missing"),
        ("anonymous: {roles: [ghost]}", "anonymous.roles.0: unknown role 'ghost'"),
        (
            f"users: {{a: {{roles: [], token_sha256: ['{'0' * 64}']}}, "
            f"b: {{roles: [], token_sha256: ['{'0' * 64}']}}}}",
            "users.b.token_sha256.0: the same token is also user 'a'",
        ),
        ("jwt: {algorithms: [HS256]}", "jwt: give exactly one of"),
        ("jwt: {algorithms: [none], secret_file: x}", "jwt.algorithms: 'none' would accept"),
        ("jwt: {algorithms: [HS256], secret_file: nowhere}", "jwt.secret_file: no such file"),
        ("[unclosed", "not valid"),
        ("- a list", "must be a mapping"),
    ],
)
def test_bad_files_are_refused_naming_file_entry_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(IdentitiesFileError) as caught:
        Authenticator.from_file(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_jwt_from_an_identity_provider(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret-shared-with-the-idp-0123456789\n")
    text = IDENTITIES + (
        "jwt: {algorithms: [HS256], secret_file: secret, issuer: lab-idp, audience: statehub}\n"
    )
    auth = Authenticator.from_file(write(tmp_path, text))
    key = "s3cret-shared-with-the-idp-0123456789"
    claims = {"sub": "carol", "roles": ["instrument", "unknown"], "iss": "lab-idp"}
    claims |= {"aud": "statehub", "exp": int(time.time()) + 60}
    carol = auth.authenticate(Credentials(bearer=jwt.encode(claims, key, algorithm="HS256")))
    assert (carol.name, carol.method, carol.roles) == ("carol", "jwt", ("instrument",))
    assert carol.permissions.allows(Right.WRITE, "lab/instrument/1")
    expired = claims | {"exp": int(time.time()) - 10}
    with pytest.raises(UnauthenticatedError, match="expired"):
        auth.authenticate(Credentials(bearer=jwt.encode(expired, key, algorithm="HS256")))
    forged = jwt.encode(claims, "another-key-of-enough-length-000000", algorithm="HS256")
    with pytest.raises(UnauthenticatedError, match="Signature"):
        auth.authenticate(Credentials(bearer=forged))


def test_cli_makes_entries_the_server_accepts(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(main, ["auth", "new-token", "dave", "--role", "viewer"])
    assert made.exit_code == 0, made.output
    token = made.output.splitlines()[0].rsplit(" ", 1)[1]
    entry = "\n".join(made.output.splitlines()[2:])
    path = write(tmp_path, 'roles: {viewer: {read: [""]}}\nusers:\n' + entry + "\n")
    assert runner.invoke(main, ["auth", "check", str(path)]).exit_code == 0
    assert Authenticator.from_file(path).authenticate(Credentials(bearer=token)).name == "dave"
    hashed = runner.invoke(main, ["auth", "hash-token"], input=token + "\n")
    assert hashed.output.strip() == token_digest(token)
    bad = write(tmp_path, "users: {x: {roles: [y]}}", "bad.yaml")
    refused = runner.invoke(main, ["auth", "check", str(bad)])
    assert refused.exit_code == 1
    assert "users.x.roles.0: unknown role 'y'" in refused.output
