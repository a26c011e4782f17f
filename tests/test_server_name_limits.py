"""Names and tokens a client presents are bounded (docs/limits.md).

A hello's client name is at most 256 characters; a credential, hello's token, a lock
owner and a NanoVer access token at most 16 KiB of UTF-8. Over it: ``LimitExceededError``
naming the field and the limit, nothing kept, and every other client unaffected. Run over
each session transport on real servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack

import grpc
import pytest

from statehub import AsyncClient
from statehub.errors import LimitExceededError
from statehub.server.limits import MAX_CLIENT_NAME_CHARS, MAX_TOKEN_BYTES
from support import raw_session
from support.raw_session import RemoteError, connected, running_server
from test_nanover_conformance import _nanover

FOUR_MB_NAME = "n" * 4_000_000


@pytest.fixture(params=["grpc", "websocket", "tcp"], autouse=True)
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    with raw_session.over(request.param):
        yield request.param


async def test_a_4_mb_client_name_is_refused_and_sessions_still_works_for_others() -> None:
    async with (
        running_server() as server,
        connected(server, hello=False) as admin,
        AsyncExitStack() as stack,
    ):
        await admin.request("hello", client="operator")
        hogs = []
        for _ in range(3):
            hog = await stack.enter_async_context(connected(server, hello=False))
            hogs.append(hog)
            with pytest.raises(RemoteError) as refused:
                await hog.request("hello", client=FOUR_MB_NAME)
            assert refused.value.status == "RESOURCE_EXHAUSTED"
            assert isinstance(refused.value.error, LimitExceededError)
            message = str(refused.value)
            assert "hello: 'client'" in message and "4,000,000 characters" in message
            assert f"limit of {MAX_CLIENT_NAME_CHARS} characters" in message
            assert len(message) < 300  # the error does not carry the name back
        assert all(len(session.client) <= MAX_CLIENT_NAME_CHARS for session in server.hub.sessions)
        frames_before = len(admin.frames_seen)
        listing = (await admin.request("list_sessions"))["sessions"]
        assert [entry["client"] for entry in listing] == ["operator"]
        assert max(admin.frames_seen[frames_before:]) < 2_000
        # A refused hello can be sent again with a name within the limit.
        await hogs[0].request("hello", client="x" * MAX_CLIENT_NAME_CHARS)
        listing = (await admin.request("list_sessions"))["sessions"]
        assert sorted(len(entry["client"]) for entry in listing) == [8, MAX_CLIENT_NAME_CHARS]


async def test_a_client_name_one_over_the_limit_is_refused() -> None:
    async with running_server() as server, connected(server, hello=False) as session:
        with pytest.raises(RemoteError, match=f"{MAX_CLIENT_NAME_CHARS + 1} characters"):
            await session.request("hello", client="é" * (MAX_CLIENT_NAME_CHARS + 1))


@pytest.mark.parametrize("field", ["credential", "token"])
async def test_credentials_and_tokens_are_bounded_in_utf8_bytes(field: str) -> None:
    euro = "€"  # 3 bytes of UTF-8
    within = euro * (MAX_TOKEN_BYTES // 3)
    over = euro * (MAX_TOKEN_BYTES // 3 + 1)
    async with running_server() as server:
        async with connected(server, hello=False) as session:
            await session.request("hello", client="ok", **{field: within})
        async with connected(server, hello=False) as session:
            await session.request("hello", client="ok", **{field: "x" * MAX_TOKEN_BYTES})
        async with connected(server, hello=False) as session:
            with pytest.raises(RemoteError) as refused:
                await session.request("hello", client="ok", **{field: over})
            assert refused.value.status == "RESOURCE_EXHAUSTED"
            assert f"hello: '{field}': a token of {len(over.encode()):,} bytes" in str(
                refused.value
            )
            assert f"limit of {MAX_TOKEN_BYTES} bytes" in str(refused.value)
        async with connected(server, hello=False) as session:
            with pytest.raises(RemoteError, match="limit of 16384 bytes"):
                await session.request("hello", **{field: "t" * 4_000_000})


async def test_a_lock_owner_is_bounded() -> None:
    async with running_server() as server, connected(server) as session:
        with pytest.raises(RemoteError, match=r"lock 'k': 'owner': a token of 16,385 bytes"):
            await session.request(
                "lock", key="k", exclusive=True, owner="o" * (MAX_TOKEN_BYTES + 1)
            )
        assert await server.locks.holdings() == []
        reply = await session.request("lock", key="k", exclusive=True, owner="o" * MAX_TOKEN_BYTES)
        assert reply["fence"] >= 1


async def test_the_python_client_gets_the_error_on_connect(transport: str) -> None:
    if transport != "grpc":
        pytest.skip("one transport is enough for the client")
    async with running_server() as server:
        client = AsyncClient("127.0.0.1", server.port, name="c" * 300)
        with pytest.raises(LimitExceededError, match="limit of 256 characters"):
            await client.connect()
        await client.close()


async def test_a_nanover_access_token_is_bounded(transport: str) -> None:
    if transport != "grpc":
        pytest.skip("NanoVer's gRPC services are on the gRPC port")
    async with running_server() as server:
        async for nanover in _nanover(server, "a" * (MAX_TOKEN_BYTES + 1)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await nanover.locks({"k": 10})
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "access_token: a token of 16,385 bytes" in str(refused.value.details())
            with pytest.raises(grpc.aio.AioRpcError):
                await nanover.update({"k": 1})
        assert server.state.leases() == [] and server.state.copy_content() == {}
        async for nanover in _nanover(server, "a" * MAX_TOKEN_BYTES):
            assert await nanover.locks({"k": 10})
