"""What --auth and TLS cost: acknowledged writes with each on and off, in interleaved rounds.

Each round runs every configuration once on a fresh in-process server, in turn (a
different one first each round), so load from other programs on a shared machine falls
on all of them alike; the table gives each
one's median and its ratio to plain. The role used grants ``PREFIXES`` write and read
prefixes (so a check takes the binary search, not the "every key" fast path), and the
certificate is made at run time.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from statehub.auth import Authenticator, Grant, Permissions, Principal, Right, token_digest
from statehub.auth.identities import check_identities
from statehub.bench.network import KEYS, WINDOW, _pipelined_writes
from statehub.bench.table import Result
from statehub.client.async_client import AsyncClient
from statehub.client.tls import ClientTls
from statehub.core.commands import CommandRegistry
from statehub.protocol.codec import encode_batch
from statehub.server.peer import Peer
from statehub.server.session import Hub, Session
from statehub.server.tls import ServerTls
from statehub.serving.state_server import StateServer
from statehub.store.state_dictionary import StateDictionary

ROUNDS = 15
WRITES = 10_000
PREFIXES = 50
TOKEN = "bench-token"
CONFIGURATIONS = ("plain", "--auth", "TLS", "--auth + TLS")
#: The role's prefixes: the benchmark's keys (key0..key99) fall under the last one.
ROLE_PREFIXES = (*(f"area{i}/" for i in range(PREFIXES - 1)), "key")


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="statehub-bench-") as folder:
        return asyncio.run(_run_all(Path(folder)))


async def _run_all(folder: Path) -> list[Result]:
    server_tls, client_tls = _self_signed(folder)
    figures: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    for round_number in range(ROUNDS):
        # Each round starts with the next configuration: none always runs right after
        # another's server stopped (or first, on a cold process).
        start = round_number % len(CONFIGURATIONS)
        for name in CONFIGURATIONS[start:] + CONFIGURATIONS[:start]:
            auth = _authenticator() if "--auth" in name else None
            tls = "TLS" in name
            figures[name].append(
                await _writes(auth, server_tls if tls else None, client_tls if tls else None)
            )
    plain = statistics.median(figures["plain"])
    results = []
    for name in CONFIGURATIONS:
        median = statistics.median(figures[name])
        results.append(
            Result(
                f"acknowledged 1-key writes, {WINDOW} in flight, {name} "
                f"(median of {ROUNDS} interleaved rounds; {median / plain:.2f} x plain)",
                median,
                "writes/s",
            )
        )
    results.extend(await _session_path())
    check = _check_cost()
    results.append(check)
    results.append(
        Result(
            "that check's share of the time of one plain acknowledged write (1 / writes/s)",
            check.figure * 1e-9 * plain * 100,
            "%",
        )
    )
    return results


def _authenticator() -> Authenticator:
    prefixes = list(ROLE_PREFIXES)
    data = {
        "roles": {"writer": {"read": prefixes, "write": prefixes}},
        "users": {"bench": {"roles": ["writer"], "token_sha256": [token_digest(TOKEN)]}},
    }
    return Authenticator(check_identities(data, "<bench>"))


async def _writes(
    auth: Authenticator | None, server_tls: ServerTls | None, client_tls: ClientTls | None
) -> float:
    server = StateServer(address="127.0.0.1", port=0, auth=auth, tls=server_tls)
    async with (
        server,
        AsyncClient(
            "127.0.0.1",
            server.port,
            reconnect=False,
            credential=TOKEN if auth is not None else None,
            tls=client_tls,
        ) as writer,
    ):
        await _pipelined_writes(writer, 1_000)  # warm up
        started = time.perf_counter()
        await _pipelined_writes(writer, WRITES)
        return WRITES / (time.perf_counter() - started)


async def _session_path() -> list[Result]:
    """The server's whole handling of update requests, without a network: frames of 64
    requests fed to a session as a transport would, replies taken, with and without
    --auth in interleaved rounds. Steadier than the end-to-end figures."""
    figures: dict[str, list[float]] = {"without --auth": [], "with --auth": []}
    order: list[tuple[str, Authenticator | None]] = [
        ("without --auth", None),
        ("with --auth", _authenticator()),
    ]
    for _ in range(ROUNDS):
        for name, auth in order:
            figures[name].append(await _session_updates(auth))
        order.reverse()  # neither always runs first
    plain = statistics.median(figures["without --auth"])
    return [
        Result(
            f"update requests handled by a session in process, {name} (median of {ROUNDS} "
            f"rounds; {statistics.median(runs) / plain:.3f} x without)",
            statistics.median(runs),
            "requests/s",
        )
        for name, runs in figures.items()
    ]


async def _session_updates(auth: Authenticator | None) -> float:
    hub = Hub(
        state=StateDictionary(),
        commands=CommandRegistry(),
        max_message_bytes=4 * 1024 * 1024,
        keepalive_s=10.0,
        auth=auth,
    )
    session = Session(hub, Peer(address="bench", transport="none"))
    await session.receive(encode_batch([{"id": 0, "op": "hello", "credential": TOKEN}]))
    await session.next_frame()
    frames = [
        encode_batch(
            [
                {"id": i, "op": "update", "updates": {f"key{i % KEYS}": i}}
                for i in range(first, first + 64)
            ]
        )
        for first in range(1, WRITES, 64)
    ]
    started = time.perf_counter()
    for frame in frames:
        await session.receive(frame)
        await session.next_frame()
    elapsed = time.perf_counter() - started
    session.close()
    return len(frames) * 64 / elapsed


def _check_cost() -> Result:
    principal = Principal("bench", Permissions.of([Grant(write=ROLE_PREFIXES)]), method="token")
    keys = [[f"key{i % KEYS}"] for i in range(100_000)]
    require: Callable[[Right, list[str], str], None] = principal.require
    started = time.perf_counter()
    for key in keys:
        require(Right.WRITE, key, "update")
    elapsed = time.perf_counter() - started
    return Result(
        f"one write-right check of a 1-key update, {PREFIXES}-prefix role, in process",
        elapsed / len(keys) * 1e9,
        "ns",
    )


def _self_signed(folder: Path) -> tuple[ServerTls, ClientTls]:
    """A certificate for 127.0.0.1, signed by itself and trusted by the client."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "statehub bench")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ServerTls.from_files(cert_file, key_file), ClientTls(ca_file=cert_file)
