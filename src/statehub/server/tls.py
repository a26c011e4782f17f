"""TLS for a server's ports: one set of files, as gRPC credentials or an ``ssl`` context.

``--tls-cert``/``--tls-key`` encrypt and let clients check the server; ``--tls-client-ca``
requires of every client a certificate signed by that CA (mutual TLS), whose names
(subject CN, SANs) then identify the client to the identities file. Required, not just
requested: gRPC's Python server can only refuse or ignore client certificates, and a port
that ignored them on one transport but checked them on another would be a trap.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's certificate chain and key, and the CA its clients' certificates need."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @classmethod
    def from_files(
        cls,
        cert_file: str | Path,
        key_file: str | Path,
        client_ca_file: str | Path | None = None,
    ) -> ServerTls:
        """Read the PEM files; ``ValueError`` naming a file that is missing or not PEM."""
        ca_path = Path(client_ca_file) if client_ca_file is not None else None
        return cls(
            _read_pem(Path(cert_file), "certificate"),
            _read_pem(Path(key_file), "private key"),
            _read_pem(ca_path, "client CA") if ca_path is not None else None,
            Path(cert_file),
            Path(key_file),
            ca_path,
        )

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """For ``grpc.aio.Server.add_secure_port``."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same TLS settings for an HTTP/WebSocket port (needs the files, not bytes)."""
        if self.cert_file is None or self.key_file is None:
            raise ValueError("an ssl context is made from files: use ServerTls.from_files")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file is not None:
            context.load_verify_locations(self.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"TLS {what} file {str(path)!r}: {error.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"TLS {what} file {str(path)!r} is not PEM (no -----BEGIN line)")
    return data


def certificate_names(certificate: dict[str, Any] | None) -> tuple[str, ...]:
    """The subject CN, DNS and URI names of a client certificate (``getpeercert()``'s form).

    ``ssl`` hands over a certificate only once it has verified it (against
    ``--tls-client-ca``; the dict is empty otherwise), so the names can be trusted, as
    gRPC's are (``server/grpc_credentials.py``).
    """
    if not certificate:
        return ()
    names: dict[str, None] = {}
    for relative_name in certificate.get("subject", ()):
        for field, value in relative_name:
            if field == "commonName":
                names[value] = None
    for kind, value in certificate.get("subjectAltName", ()):
        if kind in ("DNS", "URI"):
            names[value] = None
    return tuple(names)
