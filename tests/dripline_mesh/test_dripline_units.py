"""The pure parts of the dripline edge, without a broker: headers and integer kinds,
payloads, chunking and reassembly, mesh settings and credentials."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from pathlib import Path

import pamqp.decode
import pamqp.encode
import pytest
from hypothesis import given
from hypothesis import strategies as st

from statehub.dripline import wire
from statehub.dripline.chunks import Reassembler, message_ids, parse_message_id, split
from statehub.dripline.serving import mesh_for
from statehub.dripline.settings import MeshSettingsError, mesh_settings, parse_block
from statehub.endpoints.config import parse_config
from statehub.endpoints.return_codes import (
    DecodingFailedError,
    InvalidEncodingError,
    InvalidLockoutKeyError,
    InvalidMethodError,
)


def test_integers_go_out_unsigned() -> None:
    table = pamqp.encode.field_table({"message_type": wire.Unsigned(3), "plain": 3})
    assert b"\x0cmessage_typei\x00\x00\x00\x03" in table  # 'i': unsigned 32-bit
    assert b"\x05plainb\x03" in table  # other ints keep pamqp's choice
    _, decoded = pamqp.decode.field_table(table)
    assert decoded == {"message_type": 3, "plain": 3}


def test_integer_headers_of_any_kind_and_nothing_else() -> None:
    for value in (3, wire.Unsigned(3), 2**40):
        assert wire.header_int({"x": value}, "x") == value
    assert wire.header_int({}, "x") is None
    for bad in (True, "3", 3.0):
        with pytest.raises(DecodingFailedError, match="'x' must be an integer"):
            wire.header_int({"x": bad}, "x")


def test_request_headers_are_parsed_or_refused_with_their_code() -> None:
    key = str(uuid.uuid4())
    parsed = wire.parse_request_headers(
        {"message_type": 3, "message_operation": 9, "specifier": "lock", "lockout_key": key}
    )
    assert parsed == wire.RequestHeaders(3, 9, "lock", key)
    nil = wire.parse_request_headers(
        {"message_type": 3, "message_operation": 1, "specifier": "", "lockout_key": wire.NIL_UUID}
    )
    assert (nil.specifier, nil.lockout_key) == (None, None)
    with pytest.raises(InvalidMethodError, match="message_operation 7"):
        wire.parse_request_headers({"message_type": 3, "message_operation": 7})
    with pytest.raises(DecodingFailedError, match="'message_type' is missing"):
        wire.parse_request_headers({"message_operation": 1})
    with pytest.raises(InvalidLockoutKeyError):
        wire.parse_request_headers({"message_type": 3, "message_operation": 0, "lockout_key": "k"})


def test_payloads() -> None:
    assert wire.decode_payload(wire.encode_payload({"values": [1.5, "a"]}), wire.ENCODING) == {
        "values": [1.5, "a"]
    }
    assert wire.decode_payload(b"", wire.ENCODING) is None
    with pytest.raises(InvalidEncodingError, match="'text/plain'"):
        wire.decode_payload(b"{}", "text/plain")
    with pytest.raises(DecodingFailedError, match="not JSON"):
        wire.decode_payload(b"\xff{", wire.ENCODING)
    with pytest.raises(ValueError):
        wire.encode_payload(float("nan"))


def test_timestamps_are_rfc3339_utc_with_milliseconds() -> None:
    moment = dt.datetime(2017, 12, 31, 15, 0, 0, 123456, tzinfo=dt.UTC)
    assert wire.timestamp(moment) == "2017-12-31T15:00:00.123Z"


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=700), st.randoms())
def test_split_and_reassemble_in_any_order(body: bytes, size: int, shuffle: random.Random) -> None:
    pieces = split(body, size)
    assert all(len(piece) <= size for piece in pieces)
    ids = message_ids(len(pieces))
    order = list(range(len(pieces)))
    shuffle.shuffle(order)
    reassembler: Reassembler[str] = Reassembler(timeout=1)
    results = [reassembler.add(ids[i], pieces[i], "context", now=0) for i in order]
    assert results[:-1] == [None] * (len(pieces) - 1)
    whole = results[-1] if len(pieces) > 1 else reassembler.add(ids[0], pieces[0], "context", 0)
    assert whole == (body, "context")
    assert len(reassembler) == 0


def test_missing_chunks_expire_with_what_was_missing() -> None:
    reassembler: Reassembler[str] = Reassembler(timeout=1)
    base = str(uuid.uuid4())
    assert reassembler.add(f"{base}/0/3", b"a", "reply here", now=10) is None
    assert reassembler.add(f"{base}/2/3", b"c", "ignored", now=10.5) is None
    assert reassembler.next_deadline() == 11.5
    assert reassembler.expire(now=11.4) == []
    (incomplete,) = reassembler.expire(now=11.5)
    assert (incomplete.received, incomplete.total, incomplete.context) == ([0, 2], 3, "reply here")
    assert "chunk(s) 1 of 3 missing" in incomplete.describe()
    assert len(reassembler) == 0


def test_message_ids() -> None:
    assert parse_message_id("abc") == ("abc", 0, 1)
    assert parse_message_id("abc/0/1") == ("abc", 0, 1)
    assert parse_message_id("abc/4/5") == ("abc", 4, 5)
    for bad in ("abc/5/5", "abc/x/2", "abc/1", "abc/0/99999999"):
        with pytest.raises(DecodingFailedError, match="message_id"):
            parse_message_id(bad)
    reassembler: Reassembler[None] = Reassembler(timeout=1)
    reassembler.add("m/0/2", b"a", None, 0)
    with pytest.raises(DecodingFailedError, match="says 3 chunks, an earlier one said 2"):
        reassembler.add("m/1/3", b"b", None, 0)


def test_settings_from_url_block_and_environment(tmp_path: Path) -> None:
    block = parse_block({"broker": "rabbit.lab", "broker_port": 5673, "max_payload_size": 4096})
    settings = mesh_settings(None, block, environ={})
    assert (settings.host, settings.port, settings.username, settings.password) == (
        "rabbit.lab",
        5673,
        "guest",
        "guest",
    )
    assert settings.max_payload_size == 4096
    env = {"DRIPLINE_USER": "dl", "DRIPLINE_PASSWORD": "p@ss/word"}
    settings = mesh_settings(None, block, environ=env)
    assert (settings.username, settings.password) == ("dl", "p@ss/word")
    assert settings.url == "amqp://dl:p%40ss%2Fword@rabbit.lab:5673/%2F"
    assert "p@ss" not in settings.where
    # the URL wins over the block and the environment
    settings = mesh_settings("amqp://alice:secret@other:5000/lab", block, environ=env)
    assert (settings.host, settings.port, settings.virtual_host) == ("other", 5000, "lab")
    assert (settings.username, settings.password) == ("alice", "secret")

    auth = tmp_path / "authentications.json"
    auth.write_text(json.dumps({"amqp": {"username": "filed", "password": "pw"}}))
    settings = mesh_settings(None, parse_block({"auth_file": str(auth)}), environ={})
    assert (settings.username, settings.password) == ("filed", "pw")


def test_bad_settings_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(MeshSettingsError) as bad:
        parse_block({"broker_port": 0, "exchange": "x"}, "lab.yaml: dripline_mesh")
    assert "lab.yaml: dripline_mesh: option 'broker_port'" in str(bad.value)
    assert "option 'exchange': unknown option" in str(bad.value)
    with pytest.raises(MeshSettingsError, match="DRIPLINE_USER is set but DRIPLINE_PASSWORD"):
        mesh_settings(None, None, environ={"DRIPLINE_USER": "dl"})
    with pytest.raises(MeshSettingsError, match="scheme must be amqp"):
        mesh_settings("http://localhost/", None, environ={})
    with pytest.raises(MeshSettingsError, match="cannot read"):
        mesh_settings(None, parse_block({"auth_file": str(tmp_path / "none")}), environ={})
    (tmp_path / "auth").write_text("amqp: {username: x}")
    with pytest.raises(MeshSettingsError, match="string 'username' and 'password'"):
        mesh_settings(None, parse_block({"auth_file": str(tmp_path / "auth")}), environ={})


def test_which_configurations_go_on_a_mesh() -> None:
    named = parse_config("name: lab\nendpoints: [{name: a}]")
    assert mesh_for(None, named) is None  # no URL, no block: not on a mesh
    assert mesh_for("amqp://h/", named) is not None
    with_block = parse_config("name: lab\nendpoints: [{name: a}]\ndripline_mesh: {broker: h}")
    settings = mesh_for(None, with_block)
    assert settings is not None and settings.host == "h"
    loose = parse_config("endpoints: [{name: a}]")
    with pytest.raises(MeshSettingsError, match="top-level 'name'"):
        mesh_for("amqp://h/", loose, "lab.yaml")
    with pytest.raises(MeshSettingsError, match="--dripline needs --config"):
        mesh_for("amqp://h/", None)
