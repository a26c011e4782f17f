"""The session's frames as the binary messages of one WebSocket (``ws://``, ``wss://``)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from statehub.client.frame_stream import CLOSE_GRACE, StreamBroken
from statehub.client.tls import ClientTls
from statehub.errors import MessageTooLargeError, ProtocolError, StatehubError

#: The close codes a session WebSocket ends with when the server says why, and the error
#: each stands for: the server closes on a malformed frame with PROTOCOL_ERROR and the
#: reason (``web/session_socket.py``), aiohttp on a message over the server's limit.
_SERVER_ERRORS: dict[int, type[StatehubError]] = {
    aiohttp.WSCloseCode.PROTOCOL_ERROR: ProtocolError,
    aiohttp.WSCloseCode.MESSAGE_TOO_BIG: MessageTooLargeError,
}

#: Where the web edge serves the session protocol (``statehub.web.edge``).
WEBSOCKET_SESSION_PATH = "/v1/session"


class WebSocketFrames:
    """Frames as the binary messages of one WebSocket (``ws://host:port/v1/session``)."""

    def __init__(self, http: aiohttp.ClientSession, socket: aiohttp.ClientWebSocketResponse):
        self._http = http
        self._socket = socket

    @classmethod
    async def open(cls, url: str, tls: ClientTls | None) -> WebSocketFrames:
        parts = urlsplit(url)
        if parts.path in ("", "/"):
            url = urlunsplit(parts._replace(path=WEBSOCKET_SESSION_PATH))
        # The client's keepalive is the session's ping (Connection); frames of any size.
        http = aiohttp.ClientSession()
        try:
            socket = await http.ws_connect(
                url,
                max_msg_size=0,
                autoping=True,
                ssl=tls.ssl_context() if tls is not None else True,
                server_hostname=tls.server_name if tls is not None else None,
            )
        except (aiohttp.ClientError, OSError) as error:
            await http.close()
            raise StreamBroken(f"{type(error).__name__}: {error}") from None
        except BaseException:
            await http.close()
            raise
        return cls(http, socket)

    async def write(self, frame: bytes) -> None:
        try:
            await self._socket.send_bytes(frame)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as error:
            raise StreamBroken(f"writing failed: {type(error).__name__}: {error}") from None

    async def read(self) -> bytes | None:
        message = await self._socket.receive()
        if message.type is aiohttp.WSMsgType.BINARY:
            return message.data  # type: ignore[no-any-return]
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            code = self._socket.close_code
            if code in (None, aiohttp.WSCloseCode.OK):
                return None
            reason = message.extra if isinstance(message.extra, str) else ""
            description = f"the server closed the WebSocket with {code}: {reason}"
            server_error = _SERVER_ERRORS.get(code)
            raise StreamBroken(
                description, server_error(reason or description) if server_error else None
            )
        if message.type is aiohttp.WSMsgType.ERROR:
            raise StreamBroken(f"WebSocket error: {self._socket.exception()}")
        raise StreamBroken(f"unexpected WebSocket message of type {message.type.name}")

    def abort(self) -> None:
        closing = asyncio.ensure_future(self.close())
        closing.add_done_callback(lambda _: None)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._socket.close(), CLOSE_GRACE)
        await self._http.close()
