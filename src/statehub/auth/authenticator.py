"""Who a connection is: a bearer token, a JWT or a client certificate, mapped to rights.

Sans-I/O: a transport collects ``Credentials`` (the bearer token from gRPC metadata or the
session's hello, the verified client certificate's names) and asks ``authenticate``; the
answer is a ``Principal`` whose permissions were compiled when the file was loaded.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import jwt

from statehub.auth.errors import UnauthenticatedError
from statehub.auth.identities import ANONYMOUS_NAME, IdentitiesEntry, JwtEntry, load_identities
from statehub.auth.permissions import UNRESTRICTED, Grant, Permissions, Principal

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client presented on connect."""

    #: A bearer token (``authorization: Bearer ...`` metadata, or hello's ``credential``).
    bearer: str | None = None
    #: Names of the verified TLS client certificate: subject CN, DNS and URI SANs.
    cert_names: tuple[str, ...] = ()


def token_digest(token: str) -> str:
    """The SHA-256 hex digest stored in the identities file for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Authenticator:
    """Maps credentials to principals, from one checked identities file (reloadable)."""

    def __init__(self, identities: IdentitiesEntry, source: str = "<identities>") -> None:
        self.source = source
        roles = {name: role.grant() for name, role in identities.roles.items()}
        self._by_token: dict[str, Principal] = {}
        self._by_cert: dict[str, Principal] = {}
        for name, user in identities.users.items():
            principal = Principal(
                name,
                Permissions.of(roles[role] for role in user.roles),
                tuple(user.roles),
                "token",
            )
            for digest in user.token_sha256:
                self._by_token[digest] = principal
            certified = Principal(name, principal.permissions, principal.roles, "certificate")
            for cert_name in user.cert_names:
                self._by_cert[cert_name] = certified
        anonymous_roles = tuple(identities.anonymous.roles)
        #: None when clients without a credential are refused (no anonymous roles).
        self.anonymous: Principal | None = (
            Principal(
                ANONYMOUS_NAME,
                Permissions.of(roles[role] for role in anonymous_roles),
                anonymous_roles,
                "anonymous",
            )
            if anonymous_roles
            else None
        )
        # A JWT may not name a user of the file (nor the anonymous identity): one name is one
        # identity, whatever credential proves it (leases, listings and logs go by name).
        taken = frozenset(identities.users) | {ANONYMOUS_NAME}
        self._jwt = (
            _JwtVerifier(identities.jwt, roles, taken) if identities.jwt is not None else None
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Authenticator:
        """Load ``path``; ``IdentitiesFileError`` naming file, entry and field if it is bad."""
        return cls(load_identities(path), str(path))

    def authenticate(self, credentials: Credentials) -> Principal:
        """The principal for ``credentials``; ``UnauthenticatedError`` if none is allowed.

        A bearer token is tried first (a JWT if it looks like one and JWT is configured, else
        a token of the file); then the client certificate; then the anonymous role.
        """
        bearer = credentials.bearer
        if bearer:
            if self._jwt is not None and bearer.count(".") == 2:
                return self._jwt.verify(bearer)
            principal = self._by_token.get(token_digest(bearer))
            if principal is None:
                raise UnauthenticatedError("the token presented is not known to this server")
            return principal
        for name in credentials.cert_names:
            principal = self._by_cert.get(name)
            if principal is not None:
                return principal
        if self.anonymous is not None:
            return self.anonymous
        if credentials.cert_names:
            raise UnauthenticatedError(
                f"the client certificate ({', '.join(credentials.cert_names)}) names no user, "
                "and clients without a credential may do nothing here"
            )
        raise UnauthenticatedError(
            "this server requires a credential (a bearer token or a client certificate); "
            "clients without one may do nothing here"
        )


class OpenAccess:
    """A server without ``--auth``: everyone may do everything."""

    source = ""

    def authenticate(self, credentials: Credentials) -> Principal:
        return UNRESTRICTED


class _JwtVerifier:
    def __init__(self, entry: JwtEntry, roles: dict[str, Grant], taken: frozenset[str]) -> None:
        key_file = entry.public_key_file or entry.secret_file
        assert key_file is not None  # the file check made sure of one
        self._key = key_file.read_bytes()
        if entry.secret_file is not None:
            self._key = self._key.strip()
        self._entry = entry
        self._grants = roles
        #: Names a JWT may not claim: the file's users and the anonymous identity.
        self._taken = taken
        #: Compiled once per set of roles seen (at most one per subset of the file's roles).
        self._permissions: dict[tuple[str, ...], Permissions] = {}

    def verify(self, token: str) -> Principal:
        entry = self._entry
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=entry.algorithms,
                issuer=entry.issuer,
                audience=entry.audience,
                leeway=entry.leeway_s,
                options={"require": ["exp"]},
            )
        except jwt.PyJWTError as error:
            raise UnauthenticatedError(f"the JWT presented was refused: {error}") from None
        name = claims.get(entry.name_claim)
        if not isinstance(name, str) or not name:
            raise UnauthenticatedError(f"the JWT has no {entry.name_claim!r} claim naming who")
        if name in self._taken:
            raise UnauthenticatedError(
                f"the JWT's {entry.name_claim!r} claim names {name!r}, which is the name of an "
                "identity of the identities file (a user or the anonymous role): one name "
                "cannot be two identities; the server's operator must rename one of them"
            )
        claimed = claims.get(entry.roles_claim, [])
        if isinstance(claimed, str):
            claimed = claimed.split()
        if not isinstance(claimed, list):
            raise UnauthenticatedError(f"the JWT's {entry.roles_claim!r} claim is not a list")
        roles = tuple(sorted({role for role in claimed if role in self._grants}))
        permissions = self._permissions.get(roles)
        if permissions is None:
            permissions = Permissions.of(self._grants[role] for role in roles)
            self._permissions[roles] = permissions
        return Principal(name, permissions, roles, "jwt")
