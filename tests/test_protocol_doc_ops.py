"""Every op docs/protocol.md lists is one the server answers (none is "unknown op").

The table was once ahead of the server (a ``sessions`` op it never had); this reads the
table itself, so a documented op without a handler, or a renamed one, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from statehub.errors import ProtocolError
from support.raw_session import RemoteError, connected, running_server

PROTOCOL = Path(__file__).parent.parent / "docs" / "protocol.md"


def documented_ops() -> list[str]:
    text = PROTOCOL.read_text()
    table = text.split("## Client -> server", 1)[1].split("\n## ", 1)[0]
    ops = [match.group(1) for match in re.finditer(r"^\| (\w+)[ |]", table, re.MULTILINE)]
    return [op for op in ops if op != "op"]  # the header row


def test_the_table_lists_the_ops() -> None:
    ops = documented_ops()
    assert {"hello", "get", "update", "list_sessions", "cancel"} <= set(ops)
    assert "sessions" not in ops


async def test_every_documented_op_is_answered() -> None:
    async with running_server() as server, connected(server) as session:
        for op in documented_ops():
            if op == "hello":
                continue
            try:
                await session.request(op)
            except RemoteError as error:
                unknown = isinstance(error.error, ProtocolError) and "unknown op" in str(error)
                assert not unknown, f"{op}: {error}"
