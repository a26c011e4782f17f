"""statehub's endpoints on a real RabbitMQ broker, driven by hand-made dripline requests
from a plain AMQP client: each reply's headers, payload and return code as the dripline
reference says."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

import aio_pika
import pytest

from dripline_mesh.mesh_support import Served
from dripline_mesh.raw_amqp import RawPeer, request_headers
from statehub.client import AsyncClient

GET, SET, CMD = 1, 0, 9
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
async def peer(served: Served, rabbitmq: object) -> RawPeer:
    async with RawPeer(served.mesh.settings.url) as raw:
        yield raw  # type: ignore[misc]


async def test_get_reply_headers_and_payload(peer: RawPeer) -> None:
    headers, payload, message = await peer.request("peaches", GET)
    assert payload == {"value_raw": 0.75, "value_cal": 1.5}
    assert message.content_encoding == "application/json"
    assert headers["message_type"] == 2
    assert headers["return_code"] == 0
    assert headers["return_message"] == "success"
    assert RFC3339.match(headers["timestamp"])
    stamp = dt.datetime.strptime(headers["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert abs(stamp.replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    sender = headers["sender_info"]
    assert sender["service_name"] == "lab"
    assert set(sender) == {"exe", "hostname", "username", "service_name", "versions"}
    assert "statehub" in sender["versions"]
    # the full hierarchical address reaches the same endpoint
    _, payload, _ = await peer.request("lab.peaches", GET)
    assert payload == {"value_raw": 0.75, "value_cal": 1.5}


async def test_get_with_specifier_and_is_locked(peer: RawPeer) -> None:
    _, payload, _ = await peer.request("peaches", GET, specifier="is-locked")
    assert payload == {"is_locked": False, "tag": None}
    _, payload, _ = await peer.request("peaches.is-locked", GET)
    assert payload == {"is_locked": False, "tag": None}
    _, payload, _ = await peer.request("peaches", GET, specifier="value_cal")
    assert payload == {"value_cal": 1.5}
    headers, payload, _ = await peer.request("peaches", GET, specifier="colour")
    assert headers["return_code"] == 310
    assert "colour" in headers["return_message"]
    assert payload is None


async def test_set_is_the_same_change_as_statehubs_own(served: Served, peer: RawPeer) -> None:
    state = served.endpoints.state
    events = served.endpoints.event_log
    async with AsyncClient("127.0.0.1", served.server.port) as client:
        before = state.revision
        assert await client.endpoint_set("peaches", 1) == {"value_raw": 1, "value_cal": 2}
        own_revisions = state.revision - before

        before = state.revision
        headers, payload, _ = await peer.request("peaches", SET, {"values": [2]})
        assert headers["return_code"] == 0
        assert payload == {"value_raw": 2, "value_cal": 4}  # get_on_set
        assert state.revision - before == own_revisions
        assert await client.get("lab.peaches") == 2  # statehub's clients see the change
        assert [e.value_raw for e in events.history("lab.peaches")] == [1, 2]  # one log each


async def test_calibration_and_invalid_value(peer: RawPeer) -> None:
    _, payload, _ = await peer.request("status", GET)
    assert payload == {"value_raw": "CLOSE", "value_cal": "on"}
    headers, payload, _ = await peer.request("status", SET, {"values": ["OPEN"]})
    assert (headers["return_code"], payload) == (0, {})
    _, payload, _ = await peer.request("status", GET)
    assert payload == {"value_raw": "OPEN", "value_cal": "off"}
    headers, _, _ = await peer.request("status", SET, {"values": ["HALF"]})
    assert headers["return_code"] == 304
    assert "HALF" in headers["return_message"]
    _, payload, _ = await peer.request("status", GET)
    assert payload["value_raw"] == "OPEN"  # the refused value was not stored


async def test_lockout(peer: RawPeer) -> None:
    headers, payload, _ = await peer.request("peaches", CMD, {"values": []}, specifier="lock")
    assert headers["return_code"] == 0
    key = payload["key"]
    assert uuid.UUID(key)
    _, payload, _ = await peer.request("peaches", GET, specifier="is-locked")
    assert payload["is_locked"] is True

    headers, _, _ = await peer.request("peaches", SET, {"values": [5]})
    assert headers["return_code"] == 307
    headers, _, _ = await peer.request(
        "peaches", SET, {"values": [5]}, lockout_key=str(uuid.uuid4())
    )
    assert headers["return_code"] == 307
    headers, _, _ = await peer.request("peaches", SET, {"values": [5]}, lockout_key="not-a-key")
    assert headers["return_code"] == 308
    _, payload, _ = await peer.request("peaches", GET)  # get is always allowed
    assert payload["value_raw"] == 0.75
    headers, _, _ = await peer.request("peaches", CMD, None, specifier="ping")
    assert headers["return_code"] == 0  # and ping
    headers, payload, _ = await peer.request("peaches", SET, {"values": [5]}, lockout_key=key)
    assert (headers["return_code"], payload["value_raw"]) == (0, 5)

    headers, _, _ = await peer.request("peaches", CMD, {"values": []}, specifier="unlock")
    assert headers["return_code"] == 307
    headers, payload, _ = await peer.request(
        "peaches", CMD, {"values": [], "force": True}, specifier="unlock"
    )
    assert (headers["return_code"], payload) == (0, {"unlocked": True})
    headers, payload, _ = await peer.request("peaches", CMD, {"values": []}, specifier="unlock")
    assert headers["return_code"] == 1  # no action taken: a warning, with the payload
    assert "already unlocked" in headers["return_message"]
    assert payload["unlocked"] is False

    # lock with a key of the caller's choosing, unlock with it
    own = str(uuid.uuid4())
    _, payload, _ = await peer.request("lab.peaches.lock", CMD, {"values": [own]})
    assert payload == {"key": own}
    headers, payload, _ = await peer.request(
        "peaches", CMD, {"values": []}, specifier="unlock", lockout_key=own
    )
    assert (headers["return_code"], payload) == (0, {"unlocked": True})


async def test_commands_set_condition_and_application_codes(peer: RawPeer) -> None:
    headers, _, _ = await peer.request("lab", CMD, {"values": [3]}, specifier="set_condition")
    assert headers["return_code"] == 0
    headers, payload, _ = await peer.request(
        "pump", CMD, {"values": [2], "offset": 1}, specifier="scale"
    )
    assert (headers["return_code"], payload) == (0, {"value_raw": 21})
    headers, _, _ = await peer.request("pump", CMD, {"values": []}, specifier="overheat")
    assert headers["return_code"] == 1234
    assert "too hot" in headers["return_message"]
    headers, _, _ = await peer.request("pump", CMD, {"values": [1, 2, 3]}, specifier="scale")
    assert headers["return_code"] == 303


async def test_unknown_endpoint(peer: RawPeer) -> None:
    # nobody is bound to the routing key: the broker returns the mandatory request
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await peer.publish("nosuch", b"", request_headers(GET))
    # under a service: the service answers that there is no such endpoint
    headers, _, _ = await peer.request("lab.nosuch", GET)
    assert headers["return_code"] == 102
    assert "lab.nosuch" in headers["return_message"]


async def test_bad_payloads(peer: RawPeer) -> None:
    for payload in ({"value": 1}, {"values": []}, {"values": 1}, [1], None):
        headers, _, _ = await peer.request("plain", SET, payload)
        assert headers["return_code"] == 303, payload
        assert "values" in headers["return_message"]
    headers, _, _ = await peer.request("pump", CMD, {"values": "x"}, specifier="scale")
    assert headers["return_code"] == 303


async def test_invalid_method(peer: RawPeer) -> None:
    headers, _, _ = await peer.request("plain", 5)
    assert headers["return_code"] == 306
    assert "message_operation 5" in headers["return_message"]
    headers, _, _ = await peer.request("plain", CMD, {"values": []}, specifier="explode")
    assert headers["return_code"] == 306
    assert "explode" in headers["return_message"]
    headers, _, _ = await peer.request("plain", CMD, {"values": []})
    assert headers["return_code"] == 306  # no method named at all


async def test_malformed_messages_are_answered_and_the_consumer_goes_on(peer: RawPeer) -> None:
    async def reply_to(body: bytes, headers: dict[str, object], **options: object) -> int:
        correlation_id = await peer.publish("plain", body, headers, **options)  # type: ignore[arg-type]
        (reply,) = await peer.wait_replies(correlation_id)
        code = reply.headers["return_code"]
        assert isinstance(code, int)
        return code

    assert await reply_to(b"{not json", request_headers(SET)) == 302
    assert (
        await reply_to(b'{"values": [1]}', request_headers(SET), content_encoding="text/plain")
        == 301
    )
    assert await reply_to(b"", request_headers(GET, message_type="three")) == 302
    assert await reply_to(b"", {"message_operation": 1}) == 302  # no message_type
    assert await reply_to(b"", request_headers(GET, specifier=7)) == 302
    assert await reply_to(b"", request_headers(GET), message_id="abc/x/2") == 302
    # no reply_to: nothing comes back, and the next request is still served
    await peer.publish("plain", b"{not json", request_headers(SET), reply=False)
    headers, payload, _ = await peer.request("plain", GET)
    assert (headers["return_code"], payload["value_raw"]) == (0, 1)


async def test_integer_headers_of_any_kind(peer: RawPeer) -> None:
    # pamqp sends 1 as a signed byte and 70000 as a signed long: both are read as ints
    headers, _, _ = await peer.request("plain", GET, message_type=3)
    assert headers["return_code"] == 0
    headers, _, _ = await peer.request("plain", 70_000)
    assert headers["return_code"] == 306


async def test_broadcast_ping(served: Served, peer: RawPeer) -> None:
    correlation_id = await peer.publish(
        "broadcast", b'{"values": []}', request_headers(CMD, "ping")
    )
    (reply,) = await peer.wait_replies(correlation_id)
    assert reply.headers["return_code"] == 0
    assert reply.headers["sender_info"]["service_name"] == "lab"  # type: ignore[index]
    headers, payload, _ = await peer.request("broadcast.ping", CMD, {"values": []})
    assert headers["return_code"] == 0
    # lock everything by broadcast, then unlock by broadcast with the key
    _, payload, _ = await peer.request("broadcast", CMD, {"values": []}, specifier="lock")
    key = payload["key"]
    _, locked, _ = await peer.request("status", GET, specifier="is-locked")
    assert locked["is_locked"] is True
    headers, _, _ = await peer.request(
        "broadcast", CMD, {"values": []}, specifier="unlock", lockout_key=key
    )
    assert headers["return_code"] == 0
    assert served.endpoints.endpoint("status").lockout.key is None


async def test_chunked_request_and_reply(peer: RawPeer) -> None:
    value = "x" * 700  # the test mesh's maximum payload is 200 bytes
    body = json.dumps({"values": [value]}).encode()
    message_uuid = str(uuid.uuid4())
    pieces = [body[i : i + 150] for i in range(0, len(body), 150)]
    correlation_id = str(uuid.uuid4())
    for index, piece in reversed(list(enumerate(pieces))):  # order must not matter
        await peer.requests.publish(
            aio_pika.Message(
                piece,
                headers=request_headers(SET),
                content_encoding="application/json",
                correlation_id=correlation_id,
                reply_to=peer.reply_to,
                message_id=f"{message_uuid}/{index}/{len(pieces)}",
            ),
            routing_key="plain",
        )
    # the reply ({} for a set without get_on_set) fits in one message
    (reply,) = await peer.wait_replies(correlation_id)
    assert reply.headers["return_code"] == 0

    # a get of the big value comes back split: same headers, ids <uuid>/<i>/<n>
    correlation_id = await peer.publish("plain", b"", request_headers(GET))
    first = await peer.wait_replies(correlation_id)
    total = int((first[0].message_id or "").split("/")[2])
    assert total > 1
    chunks = await peer.wait_replies(correlation_id, total)
    ids = [(chunk.message_id or "").split("/") for chunk in chunks]
    assert len({parts[0] for parts in ids}) == 1
    assert sorted(int(parts[1]) for parts in ids) == list(range(total))
    assert all(len(chunk.body) <= 200 for chunk in chunks)
    assert all(chunk.headers["return_code"] == 0 for chunk in chunks)
    in_order = sorted(chunks, key=lambda chunk: int((chunk.message_id or "").split("/")[1]))
    whole = b"".join(chunk.body for chunk in in_order)
    assert json.loads(whole) == {"value_raw": value, "value_cal": value}


async def test_missing_chunk_gives_302(peer: RawPeer) -> None:
    message_uuid = str(uuid.uuid4())
    correlation_id = str(uuid.uuid4())
    for index in (0, 2):  # chunk 1 of 3 never comes
        await peer.requests.publish(
            aio_pika.Message(
                b'{"values": ["ab',
                headers=request_headers(SET),
                content_encoding="application/json",
                correlation_id=correlation_id,
                reply_to=peer.reply_to,
                message_id=f"{message_uuid}/{index}/3",
            ),
            routing_key="plain",
        )
    (reply,) = await peer.wait_replies(correlation_id)
    assert reply.headers["return_code"] == 302
    assert "chunk(s) 1 of 3 missing" in str(reply.headers["return_message"])
    _, payload, _ = await peer.request("plain", GET)
    assert payload["value_raw"] == 1  # nothing was applied


async def test_a_reply_arriving_on_a_service_queue_is_ignored(peer: RawPeer) -> None:
    correlation_id = await peer.publish(
        "plain", b"{}", {**request_headers(GET), "message_type": 2}, reply=True
    )
    headers, _, _ = await peer.request("plain", GET)
    assert headers["return_code"] == 0
    # the service handles its queue in order: the ignored message came and went before
    assert correlation_id not in peer.replies


async def test_requests_take_effect_in_the_order_they_were_sent(peer: RawPeer) -> None:
    ids = []
    for value in range(20):  # sets and gets interleaved, none waiting for its reply
        ids.append(
            await peer.publish(
                "plain", json.dumps({"values": [value]}).encode(), request_headers(SET)
            )
        )
        ids.append(await peer.publish("plain", b"", request_headers(GET, "value_raw")))
    for value, correlation_id in enumerate(ids[1::2]):
        (reply,) = await peer.wait_replies(correlation_id)
        assert json.loads(reply.body) == {"value_raw": value}
