"""Event payloads: the tagged union round-trips, and old schema versions are upcast on read."""

import msgspec
import pytest

from memory import events
from memory.events import (
    SCHEMA_VERSIONS,
    MemoryStored,
    MemoryUpdated,
    decode_payload,
    encode_payload,
    register_upcaster,
    without_salt,
)
from memory.model import MemoryType, Scope


def test_every_payload_type_round_trips_through_its_bytes():
    stored = MemoryStored(memory_id="m1", text="hi", memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL,
                          tags=["a"])
    assert decode_payload(encode_payload(stored), "memory.stored", 2) == stored
    update = MemoryUpdated(memory_id="m1", tags=["b"])
    data = encode_payload(update)
    assert b'"text"' not in data, "unchanged fields must not be written"
    assert decode_payload(data, "memory.updated", 2) == update


def test_the_type_tag_is_inside_the_payload_bytes():
    data = encode_payload(MemoryUpdated(memory_id="m1", priority=3))
    assert msgspec.json.decode(data)["type"] == "memory.updated"


def test_an_older_schema_version_is_upcast_before_decoding(monkeypatch):
    monkeypatch.setattr(events, "_upcasters", dict(events._upcasters))

    def rename_content_to_text(raw: dict) -> dict:
        raw = dict(raw)
        raw["text"] = raw.pop("content")
        return raw

    register_upcaster("memory.stored", 0, rename_content_to_text)
    old = b'{"type":"memory.stored","memory_id":"m1","content":"from v0","memory_type":"episodic","scope":"global"}'
    event = decode_payload(old, "memory.stored", 0)
    assert isinstance(event, MemoryStored) and event.text == "from v0" and event.salt == ""


def test_a_version_without_an_upcaster_or_from_the_future_is_refused(monkeypatch):
    monkeypatch.setattr(events, "_upcasters", dict(events._upcasters))
    data = encode_payload(MemoryUpdated(memory_id="m1", priority=1))
    with pytest.raises(ValueError, match="no upcaster"):
        decode_payload(data, "memory.updated", 0)
    with pytest.raises(ValueError, match="newer than this code"):
        decode_payload(data, "memory.updated", SCHEMA_VERSIONS["memory.updated"] + 1)
    with pytest.raises(ValueError, match="unknown event type"):
        decode_payload(data, "memory.exploded", 1)


def test_unknown_fields_in_a_current_payload_are_rejected():
    with pytest.raises(msgspec.ValidationError):
        decode_payload(b'{"type":"memory.deleted","memory_id":"m1","surprise":1}', "memory.deleted", 2)


def test_every_payload_is_salted_so_equal_contents_hash_apart():
    assert min(SCHEMA_VERSIONS.values()) == 2  # every type is salted from v2 on
    first, second = (encode_payload(MemoryUpdated(memory_id="m1", text="yes")) for _ in range(2))
    assert first != second
    salts = {msgspec.json.decode(data)["salt"] for data in (first, second)}
    assert len(salts) == 2 and all(len(bytes.fromhex(salt)) == 16 for salt in salts)
    assert without_salt(decode_payload(first, "memory.updated", 2)) == without_salt(
        decode_payload(second, "memory.updated", 2))


def test_a_version_1_payload_has_no_salt_and_decodes_as_it_was_written():
    old = b'{"type":"memory.updated","memory_id":"m1","text":"yes"}'
    event = decode_payload(old, "memory.updated", 1)
    assert event == MemoryUpdated(memory_id="m1", text="yes", salt="")
    with pytest.raises(msgspec.ValidationError):  # a version 2 payload must carry its salt's type
        decode_payload(b'{"type":"memory.updated","memory_id":"m1","salt":7}', "memory.updated", 2)
