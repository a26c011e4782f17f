"""What a transport knows of the client at the other end of a connection."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peer:
    """The client's address, the transport it came by, and the credentials it showed.

    ``bearer_token`` is a token the transport itself carried (gRPC metadata, an HTTP
    Authorization header); ``certificate_identities`` the names in a verified TLS client
    certificate. Either may be absent; the session's ``hello`` may carry a credential too.
    """

    address: str
    transport: str
    bearer_token: str | None = None
    certificate_identities: tuple[str, ...] = ()
