"""Who may do what: identities, roles with per-prefix rights, and their compiled checks."""

from statehub.auth.authenticator import Authenticator, Credentials, OpenAccess, token_digest
from statehub.auth.errors import IdentitiesFileError, PermissionDeniedError, UnauthenticatedError
from statehub.auth.identities import load_identities
from statehub.auth.permissions import (
    UNRESTRICTED,
    AdminRight,
    Grant,
    Permissions,
    PrefixSet,
    Principal,
    Right,
)

__all__ = [
    "UNRESTRICTED",
    "AdminRight",
    "Authenticator",
    "Credentials",
    "Grant",
    "IdentitiesFileError",
    "OpenAccess",
    "PermissionDeniedError",
    "Permissions",
    "PrefixSet",
    "Principal",
    "Right",
    "UnauthenticatedError",
    "load_identities",
    "token_digest",
]
