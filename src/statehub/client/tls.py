"""TLS for a client's channel: the CA to trust, and a certificate for mutual TLS.

``statehubs://host:port`` (and ``wss://`` for WebSocket) is the TLS form of a server's
address, as https is of http (see ``address.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

    import grpc


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
        import grpc  # only gRPC channels need it: a TCP or WebSocket client never loads it

        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA bundle"),
            private_key=_read(self.key_file, "client key"),
            certificate_chain=_read(self.cert_file, "client certificate"),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same trust and client certificate for a ``wss://`` connection."""
        import ssl  # only TLS needs it: a plain TCP client starts faster without

        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def channel_options(self) -> list[tuple[str, str]]:
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"TLS {what} {str(path)!r}: {error.strerror}") from None
