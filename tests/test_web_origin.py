"""The web port's ``Origin`` check: no page on a foreign origin opens its WebSockets.

Real clients throughout: aiohttp with and without an ``Origin`` header, ``statehub serve``
with ``--allow-origin``, and Debian's chromium (Playwright) running a page served by a
second aiohttp server on another port, whose script tries to open the session socket.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import web
from playwright.async_api import Browser

from statehub import AsyncClient, StateServer
from statehub.protocol import decode_batch, encode_batch
from statehub.web.origins import OriginPolicy, normal_origin
from support.browser import needs_browser
from support.raw_session import running_server
from test_web_dashboard import open_dashboard

FOREIGN = "http://evil.example:8666"
HELLO = encode_batch([{"id": 1, "op": "hello", "client": "origin-test"}])


async def session_hello(port: int, headers: dict[str, str]) -> dict[str, Any]:
    """A hello over ``/v1/session`` sending ``headers`` with the upgrade; its reply."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{port}/v1/session", headers=headers) as socket,
    ):
        await socket.send_bytes(HELLO)
        message = await socket.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.BINARY
        (reply,) = decode_batch(message.data)
        return reply  # type: ignore[no-any-return]


async def upgrade_refusal(port: int, path: str, origin: str) -> tuple[int, str]:
    """The status and body of a WebSocket upgrade of ``path`` sent with ``origin``."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Origin": origin,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize("path", ["/v1/session", "/"])
async def test_an_upgrade_from_a_foreign_origin_gets_403_naming_the_origin(path: str) -> None:
    async with running_server(http_port=0) as server:
        status, body = await upgrade_refusal(server.http_port, path, FOREIGN)
        assert status == 403
        assert repr(FOREIGN) in body and "--allow-origin" in body
        assert not server.hub.sessions
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session_hello(server.http_port, {"Origin": FOREIGN})
        assert refused.value.status == 403


async def test_clients_without_origin_and_pages_of_the_servers_own_origin_connect() -> None:
    async with running_server(http_port=0) as server:
        port = server.http_port
        assert "ok" in await session_hello(port, {})
        for own in (f"http://127.0.0.1:{port}", f"HTTP://127.0.0.1:{port}/"):
            assert "ok" in await session_hello(port, {"Origin": own})
        # The same port on another host name is another origin.
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session_hello(port, {"Origin": f"http://localhost:{port}"})
        for origin in ("null", f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}"):
            status, _ = await upgrade_refusal(port, "/v1/session", origin)
            assert status == 403, origin


async def test_the_nanover_socket_without_origin_still_gets_the_state() -> None:
    async with running_server(http_port=0) as server:
        async with AsyncClient("127.0.0.1", server.port) as client:
            await client.set("room.key", 7)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{server.http_port}/") as socket,
        ):
            message = await socket.receive(timeout=10)
            assert msgpack.unpackb(message.data)["state"]["updates"] == {"room.key": 7}


async def test_allowed_origins_connect_and_others_stay_refused() -> None:
    allowed = "https://lab.example.org:8443"
    async with running_server(http_port=0, allow_origins=[allowed + "/"]) as server:
        port = server.http_port
        assert "ok" in await session_hello(port, {"Origin": "https://LAB.example.org:8443"})
        status, body = await upgrade_refusal(port, "/", "https://lab.example.org")
        assert status == 403 and allowed in body
    async with running_server(http_port=0, allow_origins=["*"]) as server:
        assert "ok" in await session_hello(server.http_port, {"Origin": FOREIGN})


@pytest.mark.parametrize("bad", ["lab.example.org", "https://lab/path", "null", "", 5])
def test_a_malformed_allowed_origin_is_refused_at_construction(bad: Any) -> None:
    with pytest.raises(ValueError, match="origin"):
        StateServer(port=0, http_port=0, allow_origins=[bad])


def test_origins_compare_in_one_normal_form() -> None:
    assert normal_origin("HTTPS://Lab.Example:443/") == "https://lab.example"
    assert normal_origin("http://[::1]:8080") == "http://[::1]:8080"
    assert normal_origin("http://a:80") == "http://a"
    assert normal_origin("file://") is None
    policy = OriginPolicy(["http://a:81"])
    assert policy.refusal(None, "http", "b:1") is None
    assert policy.refusal("http://a:81", "http", "b:1") is None
    assert policy.refusal("http://b:1", "http", "B:1") is None
    assert policy.refusal("http://b:1", "https", "b:1") is not None


def test_serve_takes_allow_origin_and_refuses_a_malformed_one() -> None:
    serve = [sys.executable, "-c", "from statehub.cli import main; main()", "serve", "--port", "0"]
    bad = subprocess.run(
        [*serve, "--allow-origin", "not an origin"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "--allow-origin" in bad.stderr and "'not an origin'" in bad.stderr
    assert "Traceback" not in bad.stderr
    process = subprocess.Popen(
        [*serve, "--allow-origin", "http://lab.example:9000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        match = re.search(r"web edge on http://127\.0\.0\.1:(\d+)/", lines[1])
        assert match is not None, lines
        port = int(match.group(1))

        async def probe() -> tuple[dict[str, Any], int]:
            reply = await session_hello(port, {"Origin": "http://lab.example:9000"})
            status, _ = await upgrade_refusal(port, "/v1/session", FOREIGN)
            return reply, status

        reply, status = asyncio.run(probe())
        assert "ok" in reply and status == 403
    finally:
        process.terminate()
        process.wait(timeout=20)


# -- in a real browser -------------------------------------------------------------------

#: The attacker's page: tries the session socket of the server whose web port is in the
#: query string and records what happened in ``window.outcome``.
ATTACK_PAGE = """<!doctype html><html><body><script>
const port = new URLSearchParams(location.search).get("port");
window.outcome = null;
const socket = new WebSocket(`ws://127.0.0.1:${port}/v1/session`);
socket.binaryType = "arraybuffer";
socket.onopen = () => {
  // a hello: {"id": 1, "op": "hello"} in msgpack
  socket.send(new Uint8Array([0x91, 0x82, 0xa2, 0x69, 0x64, 0x01, 0xa2, 0x6f, 0x70,
                              0xa5, 0x68, 0x65, 0x6c, 0x6c, 0x6f]));
};
socket.onmessage = () => { window.outcome = {opened: true, replied: true}; };
socket.onclose = (event) => {
  if (window.outcome === null) window.outcome = {opened: false, code: event.code};
};
</script></body></html>"""


@asynccontextmanager
async def page_server() -> AsyncIterator[int]:
    """A second, unrelated web server on another port serving ``ATTACK_PAGE``."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=ATTACK_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def outcome_of_attack(browser: Browser, page_port: int, server_port: int) -> Any:
    page = await browser.new_page()
    try:
        await page.goto(f"http://127.0.0.1:{page_port}/?port={server_port}")
        await page.wait_for_function("window.outcome !== null", timeout=10_000)
        return await page.evaluate("window.outcome")
    finally:
        await page.close()


@needs_browser
async def test_in_chromium_a_page_on_another_origin_cannot_open_the_session_socket(
    browser: Browser,
) -> None:
    async with page_server() as page_port, running_server(http_port=0) as server:
        outcome = await outcome_of_attack(browser, page_port, server.http_port)
        assert outcome == {"opened": False, "code": 1006}, json.dumps(outcome)
        assert not server.hub.sessions
        dashboard = await open_dashboard(browser, server.http_port)  # its own origin works
        await dashboard.close()
    # The same page from an allowed origin gets through: the check, not the page, refused.
    async with page_server() as page_port:
        allowed = f"http://127.0.0.1:{page_port}"
        async with running_server(http_port=0, allow_origins=[allowed]) as server:
            outcome = await outcome_of_attack(browser, page_port, server.http_port)
            assert outcome == {"opened": True, "replied": True}
