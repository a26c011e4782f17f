"""What a gRPC call presents about who sent it: a bearer token, a client certificate."""

from __future__ import annotations

from typing import Any

from statehub.auth import Credentials

#: Names of a verified client certificate in gRPC's auth context.
_CERTIFICATE_NAME_PROPERTIES = ("x509_common_name", "x509_subject_alternative_name")


def bearer_token(context: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def certificate_identities(context: Any) -> tuple[str, ...]:
    """The subject CN and SANs of the TLS client certificate, if the client showed one.

    gRPC puts a client certificate in the auth context only once it has verified it
    against ``--tls-client-ca``, so the names can be trusted.
    """
    names: dict[str, None] = {}
    auth_context = context.auth_context()
    for prop in _CERTIFICATE_NAME_PROPERTIES:
        for raw in auth_context.get(prop, ()):
            names[raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)] = None
    return tuple(names)


def call_credentials(context: Any) -> Credentials:
    """Both, for a call that is not a session (NanoVer's services)."""
    return Credentials(bearer_token(context), certificate_identities(context))
