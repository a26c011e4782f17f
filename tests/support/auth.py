"""An identities file and servers that use it, for the auth tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from statehub import StateServer
from statehub.auth import Authenticator, token_digest
from support.raw_session import RawSession, running_server

TOKENS = {"rita": "rita-token", "walt": "walt-token", "ada": "ada-token"}

ROLES = """
roles:
  reader: {read: ["lab/"]}
  writer:
    read: ["lab/"]
    write: ["lab/w/"]
    lease: ["lab/w/"]
    lock: ["locks/w/"]
    call: ["echo*", "endpoint.*"]
  admin: {read: [""], write: [""], lease: [""], lock: [""], call: ["*"], admin: ["*"]}
"""


def identities(anonymous: str = "", **overrides: str) -> str:
    """The identities file text: rita reads, walt writes lab/w/, ada is admin."""
    roles = {"rita": "reader", "walt": "writer", "ada": "admin", **overrides}
    users = "".join(
        f"  {name}: {{roles: [{role}], token_sha256: ['{token_digest(TOKENS[name])}']}}\n"
        for name, role in roles.items()
        if role
    )
    text = ROLES + "users:\n" + users
    if anonymous:
        text += f"anonymous: {{roles: [{anonymous}]}}\n"
    return text


def write_identities(path: Path, text: str) -> Authenticator:
    path.write_text(text)
    return Authenticator.from_file(path)


@asynccontextmanager
async def auth_server(
    tmp_path: Path, text: str | None = None, **options: Any
) -> AsyncIterator[StateServer]:
    auth = write_identities(tmp_path / "identities.yaml", text or identities())
    async with running_server(auth=auth, **options) as server:

        async def echo(**arguments: Any) -> dict[str, Any]:
            return arguments

        server.register_command("echo", echo)
        server.register_command("secret/reset", echo)
        yield server


@asynccontextmanager
async def session_as(
    server: StateServer, user: str | None, *, via: str = "hello", hello: bool = True
) -> AsyncIterator[RawSession]:
    """A raw session presenting ``user``'s token in hello's credential or gRPC metadata."""
    token = TOKENS[user] if user is not None else None
    metadata = (("authorization", f"Bearer {token}"),) if via == "metadata" and token else None
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.grpc_port}", options=options
    ) as channel:
        session = RawSession(channel, metadata)
        try:
            if hello:
                credential = token if via == "hello" else None
                await session.request("hello", client="tests", credential=credential)
            yield session
        finally:
            await session.close()
