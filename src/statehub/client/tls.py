"""TLS for a client's channel: the CA to trust, and a certificate for mutual TLS.

``statehubs://host:port`` is the TLS form of a server's address (as https to http).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

TLS_SCHEME = "statehubs://"


@dataclass(frozen=True, slots=True)
class ClientTls:
    """``ca_file``: the CA bundle the server's certificate must chain to (None: the
    system's); ``cert_file``/``key_file``: this client's certificate, for mutual TLS.
    ``server_name``: the name to check the server's certificate against, when it is not
    the address connected to (an IP address, say)."""

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA bundle"),
            private_key=_read(self.key_file, "client key"),
            certificate_chain=_read(self.cert_file, "client certificate"),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def split_tls_url(address: str) -> tuple[str, int | None, bool]:
    """``statehubs://host[:port]`` -> (host, port or None, True); other text is a host."""
    if not address.startswith(TLS_SCHEME):
        return address, None, False
    rest = address.removeprefix(TLS_SCHEME).rstrip("/")
    host, colon, port = rest.rpartition(":")
    if not colon or host.endswith(":") or not port.isdigit():  # no port, or a bare IPv6
        return rest.strip("[]"), None, True
    return host.strip("[]"), int(port), True


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"TLS {what} {str(path)!r}: {error.strerror}") from None
