"""Over the session protocol, a value no protocol could carry back is refused with
INVALID_ARGUMENT naming the key and the limit, and every other client goes on as before."""

from __future__ import annotations

from typing import Any

import pytest

from statehub import ValueLimitError
from support.raw_session import RemoteError, connected, running_server


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (nested(40), "nested more than 32 containers deep, over the limit of 32"),
        ([10**4299], "value[0]: an int of 14281 bits is over the limit of 1023 bits"),
        (2**1023, "the top level: an int of 1024 bits is over the limit of 1023 bits"),
    ],
    ids=["depth-40", "4300-digit-int", "int-beyond-a-double"],
)
async def test_a_value_no_reader_could_get_is_refused_and_harms_nobody(
    value: Any, words: str
) -> None:
    async with (
        running_server() as server,
        connected(server) as watcher,
        connected(server) as writer,
    ):
        await writer.request("update", updates={"before": 1})
        sub = await watcher.subscribe()
        assert (await watcher.next_batch(sub))["updates"] == {"before": 1}
        with pytest.raises(RemoteError) as refused:
            await writer.request("update", updates={"bad": value, "other": 2})
        assert refused.value.status == "INVALID_ARGUMENT"
        assert isinstance(refused.value.error, ValueLimitError)
        assert "key 'bad': " in str(refused.value.error) and words in str(refused.value.error)
        await writer.request("update", updates={"after": 3})
        assert (await watcher.next_batch(sub))["updates"] == {"after": 3}
        everything = await watcher.request("get", keys=None)
        assert everything["values"] == {"before": 1, "after": 3}
