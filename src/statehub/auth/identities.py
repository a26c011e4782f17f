"""The identities file of ``statehub serve --auth FILE``: roles, users, anonymous, JWT.

YAML (or TOML, by the ``.toml`` suffix)::

    roles:
      viewer: {read: [""]}                      # "" is every key
      instrument:
        read: ["lab/"]
        write: ["lab/instrument/"]
        lease: ["lab/instrument/"]
        lock: ["instrument/"]                   # read/write lock names
        call: ["endpoint.*"]                    # command name patterns (shell style)
      operator: {read: [""], write: [""], admin: ["*"]}
    users:
      alice: {roles: [operator], token_sha256: ["<64 hex digits>"]}
      headset-1: {roles: [instrument], cert_names: ["headset-1.lab.example"]}
    anonymous: {roles: [viewer]}                # clients without a credential; default none
    jwt:                                        # optional: tokens from an identity provider
      algorithms: [RS256]
      public_key_file: idp.pem
      issuer: https://idp.lab.example
      audience: statehub

Tokens are stored as SHA-256 digests only (``statehub auth hash-token`` makes them): a
token is a long random secret, so a fast hash is safe here, as for API tokens elsewhere.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from statehub.auth.errors import IdentitiesFileError
from statehub.auth.permissions import ALL_ADMIN, AdminRight, Grant

_STRICT = ConfigDict(extra="forbid", frozen=True)

AdminName = Literal["*", "clear_leases", "force_unlock", "sessions", "register_commands", "metrics"]
#: The name of the identity of clients without a credential: no user may take it.
ANONYMOUS_NAME = "anonymous"


class RoleEntry(BaseModel):
    model_config = _STRICT

    read: list[str] = []
    write: list[str] = []
    lease: list[str] = []
    lock: list[str] = []
    call: list[str] = []
    admin: list[AdminName] = []

    def grant(self) -> Grant:
        admin = ALL_ADMIN if "*" in self.admin else frozenset(AdminRight(a) for a in self.admin)
        return Grant(
            tuple(self.read),
            tuple(self.write),
            tuple(self.lease),
            tuple(self.lock),
            tuple(self.call),
            admin,
        )


class UserEntry(BaseModel):
    model_config = _STRICT

    roles: list[str]
    #: SHA-256 digests (hex) of this user's tokens; several allow rotating one.
    token_sha256: list[str] = []
    #: Client-certificate names (subject CN or a DNS/URI SAN) that identify this user.
    cert_names: list[str] = []

    @field_validator("token_sha256", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("token_sha256")
    @classmethod
    def _hex_digests(cls, digests: list[str]) -> list[str]:
        for digest in digests:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ValueError(
                    f"{digest[:12]!r}... is not a SHA-256 digest (64 hex digits); "
                    "make one with `statehub auth hash-token`, never store the token itself"
                )
        return [digest.lower() for digest in digests]


class AnonymousEntry(BaseModel):
    model_config = _STRICT

    roles: list[str] = []


class JwtEntry(BaseModel):
    model_config = _STRICT

    algorithms: list[str] = Field(min_length=1)
    #: The verification key: a PEM public key file (RS*/ES*/EdDSA) or a shared secret file.
    public_key_file: Path | None = None
    secret_file: Path | None = None
    issuer: str | None = None
    audience: str | None = None
    #: The claim naming the identity, and the claim listing its roles (names in ``roles``).
    name_claim: str = "sub"
    roles_claim: str = "roles"
    leeway_s: float = Field(default=0.0, ge=0)

    @field_validator("algorithms")
    @classmethod
    def _signed(cls, algorithms: list[str]) -> list[str]:
        if any(algorithm.lower() == "none" for algorithm in algorithms):
            raise ValueError("'none' would accept unsigned tokens from anyone")
        return algorithms


class IdentitiesEntry(BaseModel):
    model_config = _STRICT

    roles: dict[str, RoleEntry] = {}
    users: dict[str, UserEntry] = {}
    anonymous: AnonymousEntry = AnonymousEntry()
    jwt: JwtEntry | None = None


def load_identities(path: str | Path) -> IdentitiesEntry:
    """Read and check an identities file; ``IdentitiesFileError`` names every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise IdentitiesFileError(source, [f"cannot read: {error.strerror}"]) from None
    try:
        data: Any = tomllib.loads(text) if source.endswith(".toml") else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise IdentitiesFileError(source, [f"not valid: {' '.join(str(error).split())}"]) from None
    return check_identities(data, source, base=Path(path).parent)


def check_identities(data: object, source: str, base: Path = Path()) -> IdentitiesEntry:
    """Validate parsed data; relative key files are taken from ``base`` (the file's folder)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise IdentitiesFileError(source, [f"must be a mapping, got {type(data).__name__}"])
    try:
        entry = IdentitiesEntry.model_validate(data)
    except ValidationError as error:
        raise IdentitiesFileError(
            source, [_describe(detail) for detail in error.errors()]
        ) from None
    problems = _cross_checks(entry)
    if problems:
        raise IdentitiesFileError(source, problems)
    if entry.jwt is not None:
        entry = _resolve_key_files(entry, entry.jwt, base, source)
    return entry


def _describe(detail: Any) -> str:
    where = ".".join(str(part) for part in detail["loc"])
    kind = detail["type"]
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    else:
        message = detail["msg"].removeprefix("Value error, ")
        if kind != "value_error":
            message += f" (got {detail.get('input')!r})"
    return f"{where}: {message}"


def _cross_checks(entry: IdentitiesEntry) -> list[str]:
    problems: list[str] = []
    known = sorted(entry.roles)

    def check_roles(where: str, roles: list[str]) -> None:
        for index, role in enumerate(roles):
            if role not in entry.roles:
                problems.append(
                    f"{where}.roles.{index}: unknown role {role!r} (roles: {', '.join(known)})"
                )

    token_owner: dict[str, str] = {}
    cert_owner: dict[str, str] = {}
    for name, user in entry.users.items():
        if name == ANONYMOUS_NAME:
            problems.append(
                f"users.{name}: {ANONYMOUS_NAME!r} is the identity of clients without a "
                "credential; name the user otherwise"
            )
        check_roles(f"users.{name}", user.roles)
        for index, digest in enumerate(user.token_sha256):
            other = token_owner.setdefault(digest, name)
            if other != name:
                problems.append(
                    f"users.{name}.token_sha256.{index}: the same token is also user {other!r}'s"
                )
        for index, cert_name in enumerate(user.cert_names):
            other = cert_owner.setdefault(cert_name, name)
            if other != name:
                problems.append(
                    f"users.{name}.cert_names.{index}: {cert_name!r} already names user {other!r}"
                )
    check_roles("anonymous", entry.anonymous.roles)
    jwt = entry.jwt
    if jwt is not None and (jwt.public_key_file is None) == (jwt.secret_file is None):
        problems.append("jwt: give exactly one of public_key_file and secret_file")
    return problems


def _resolve_key_files(
    entry: IdentitiesEntry, jwt: JwtEntry, base: Path, source: str
) -> IdentitiesEntry:
    field_name = "public_key_file" if jwt.public_key_file is not None else "secret_file"
    path = getattr(jwt, field_name)
    resolved = path if path.is_absolute() else base / path
    if not resolved.is_file():
        raise IdentitiesFileError(source, [f"jwt.{field_name}: no such file {str(resolved)!r}"])
    return entry.model_copy(update={"jwt": jwt.model_copy(update={field_name: resolved})})
