"""Value size limits per key prefix (issue 20 point 5): one rule in the state, the same
for every edge, and a limit no reader could receive refused at start."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from statehub import AsyncClient, StateDictionary
from statehub.cli import main
from statehub.core.limits import ValueSizeLimits
from statehub.errors import ValueLimitError
from statehub.serving.state_server import StateServer
from support.polling import eventually
from support.raw_session import running_server
from test_web_nanover import nanover_peer

MIB = 1024 * 1024


async def test_a_prefix_may_hold_values_over_3_mib_and_readers_receive_them() -> None:
    limits = ValueSizeLimits(64 * 1024, (("scene.", 6 * MIB),))
    state = StateDictionary(value_limits=limits)
    big = bytes(5 * MIB)
    async with (
        running_server(state=state, max_message_bytes=8 * MIB, http_port=0) as server,
        AsyncClient("127.0.0.1", server.port) as writer,
        AsyncClient("127.0.0.1", server.port) as reader,
        nanover_peer(server) as headset,
    ):
        await writer.update({"scene.density": big})
        assert await reader.get("scene.density") == big
        await eventually(lambda: headset.state.get("scene.density") == big)
        with pytest.raises(ValueLimitError, match=r"key 'lab\.note': .* limit of 65536 bytes"):
            await writer.update({"lab.note": "x" * 70_000})


async def test_a_nanover_write_over_its_prefix_limit_fails_visibly_and_converges() -> None:
    state = StateDictionary(value_limits=ValueSizeLimits(prefixes=(("avatar.", 1_000),)))
    async with running_server(state=state, http_port=0) as server, nanover_peer(server) as peer:
        await peer.write({"avatar.u1": {"pose": [0.0] * 10}})
        await eventually(lambda: "avatar.u1" in peer.state)
        sent = len(peer.state_messages)
        await peer.write({"avatar.u1": {"pose": [0.0] * 200}})
        error = await peer.next_error()
        assert "'avatar.u1'" in error["message"] and "limit of 1000 bytes" in error["message"]
        await eventually(lambda: len(peer.state_messages) > sent)
        assert peer.state["avatar.u1"] == {"pose": [0.0] * 10}


def test_a_limit_no_frame_could_carry_is_refused_naming_both_settings() -> None:
    with pytest.raises(ValueError, match=r"keys under 'scene\.' does not fit .*max_message_bytes"):
        StateServer(
            state=StateDictionary(value_limits=ValueSizeLimits(prefixes=(("scene.", 4 * MIB),))),
            port=0,
        )


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ("scene.=5000000", "for keys under 'scene.' does not fit in a frame"),
        ("5000000", "for every key does not fit in a frame"),
        ("scene.=lots", "expected BYTES or PREFIX=BYTES"),
        ("0", "expected BYTES or PREFIX=BYTES"),
    ],
)
def test_serve_refuses_a_bad_value_limit_before_it_starts(option: str, said: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--port", "0", "--value-limit", option])
    assert result.exit_code == 2, result.output
    assert said in result.output
