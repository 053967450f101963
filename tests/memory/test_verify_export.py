"""Behaviour of the standalone export verifier (memory/verify_export.py).

Bundles are built here from scratch, byte for byte per the documented format,
so these tests also pin the format the rest of the service must produce.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.verify_export import (
    MAX_PROBLEMS,
    ZERO_HASH,
    BundleError,
    ChainReport,
    EventRecord,
    JWKSError,
    load_jwks,
    main,
    verify_bundle,
    verify_events,
)

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "memory" / "verify_export.py"
LOG = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c"
OWNER = {"iss": "https://auth.example.org", "sub": "user-42"}


# ------------------------------------------------------------------- builders


@dataclass(frozen=True)
class Signer:
    kid: str
    key: Ed25519PrivateKey

    @classmethod
    def generate(cls, kid: str) -> Signer:
        return cls(kid, Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    def jwk(self) -> dict[str, str]:
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}


SERVER = Signer.generate("server-2026-11")
INTRUDER = Signer.generate("intruder")


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


HeaderHook = Callable[[int, dict], "bytes | None"]


def build_bundle(
    n_events: int,
    redact: tuple[int, ...] | list[int] = (),
    *,
    signer: Signer = SERVER,
    owner: dict = OWNER,
    header_hook: HeaderHook | None = None,
    payload_hook: Callable[[int, dict], None] | None = None,
) -> dict:
    """A bundle exactly as the service exports it; hooks let a test bend one event."""
    events, prev = [], ZERO_HASH
    for seq in range(1, n_events + 1):
        body = {"type": "memory.stored", "memory_id": f"m{seq}", "text": f"fact number {seq} ☕"}
        if payload_hook:
            payload_hook(seq, body)
        payload = compact(body)
        header_fields = {
            "format": 1,
            "log": LOG,
            "owner": owner,
            "seq": seq,
            "event_id": f"00000000-0000-4000-8000-{seq:012d}",
            "type": "memory.stored",
            "schema_version": 1,
            "recorded_at": f"2026-11-27T20:35:{seq % 60:02d}.123456Z",
            "actor": {"sub": owner["sub"], "client_id": "claude-desktop" if seq % 2 else None},
            "request_id": f"req-{seq}" if seq % 3 else None,
            "payload_sha256": sha256(payload),
            "prev_hash": prev,
            "key_id": signer.kid,
        }
        header = (header_hook(seq, header_fields) if header_hook else None) or compact(header_fields)
        prev = sha256(header)
        events.append(
            {
                "seq": seq,
                "event_id": header_fields["event_id"],
                "type": header_fields["type"],
                "header": b64(header),
                "entry_hash": prev,
                "signature": b64(signer.sign(header)),
                "payload": None if seq in redact else b64(payload),
                "redacted": seq in redact,
            }
        )
    manifest = {
        "format": "memory-export",
        "version": 1,
        "log": LOG,
        "owner": owner,
        "event_count": n_events,
        "first_seq": 1,
        "last_seq": n_events,
        "head_hash": prev,
        "exported_at": "2026-11-28T09:00:00Z",
        "key_id": signer.kid,
    }
    return sign_manifest(
        {"manifest": "", "manifest_signature": "", "public_keys": {"keys": [signer.jwk()]}, "events": events},
        manifest,
        signer,
    )


def sign_manifest(doc: dict, manifest: dict, signer: Signer) -> dict:
    raw = compact(manifest)
    doc["manifest"], doc["manifest_signature"] = b64(raw), b64(signer.sign(raw))
    return doc


def manifest_of(doc: dict) -> dict:
    return json.loads(base64.b64decode(doc["manifest"]))


def row(doc: dict, seq: int) -> dict:
    return next(r for r in doc["events"] if r["seq"] == seq)


def header_of(doc: dict, seq: int) -> dict:
    return json.loads(base64.b64decode(row(doc, seq)["header"]))


def flip(encoded: str, index: int, mask: int = 0x01) -> str:
    data = bytearray(base64.b64decode(encoded))
    data[index % len(data)] ^= mask
    return b64(bytes(data))


def records(doc: dict) -> list[EventRecord]:
    return [
        EventRecord(
            seq=r["seq"],
            event_id=r["event_id"],
            type=r["type"],
            header=base64.b64decode(r["header"]),
            entry_hash=r["entry_hash"],
            signature=base64.b64decode(r["signature"]),
            payload=None if r["payload"] is None else base64.b64decode(r["payload"]),
            redacted=r["redacted"],
        )
        for r in doc["events"]
    ]


def messages(report: ChainReport) -> list[str]:
    return [p.message for p in report.problems]


def write_json(directory: Path, doc: Any, name: str = "bundle.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def make_bundle() -> Callable[..., dict]:
    return build_bundle


@pytest.fixture
def verify(tmp_path: Path) -> Callable[..., ChainReport]:
    """Write a bundle document to disk and verify it, as a third party would."""

    def run(doc: dict, **kwargs: Any) -> ChainReport:
        return verify_bundle(write_json(tmp_path, doc), **kwargs)

    return run


# ----------------------------------------------------------------- happy paths


def test_a_valid_bundle_verifies(make_bundle, verify):
    doc = make_bundle(5)
    report = verify(doc)
    assert report.ok, messages(report)
    assert (report.log, report.owner, report.event_count, report.last_seq) == (LOG, OWNER, 5, 5)
    assert report.head_hash == row(doc, 5)["entry_hash"]
    assert report.redacted_seqs == []


def test_an_empty_log_verifies_with_a_zero_head(make_bundle, verify):
    report = verify(make_bundle(0))
    assert report.ok, messages(report)
    assert (report.event_count, report.last_seq, report.head_hash) == (0, 0, ZERO_HASH)


def test_a_redacted_payload_still_verifies_and_is_reported(make_bundle, verify):
    report = verify(make_bundle(6, redact=[2, 5]))
    assert report.ok, messages(report)
    assert report.redacted_seqs == [2, 5]


def test_the_bundle_verifies_by_path_string_as_well_as_path(make_bundle, tmp_path):
    path = write_json(tmp_path, make_bundle(2))
    assert verify_bundle(str(path)).ok


# -------------------------------------------------------------- tamper matrix


def test_a_flipped_byte_in_a_header_fails_naming_its_seq(make_bundle, verify):
    doc = make_bundle(5)
    row(doc, 3)["header"] = flip(row(doc, 3)["header"], 40)
    found = messages(verify(doc))
    assert "seq 3: entry_hash does not match sha256 of the header" in found
    assert f"seq 3: signature does not verify with key {SERVER.kid}" in found
    assert "seq 4: prev_hash does not match the entry hash of the preceding event (seq 3)" in found


def test_a_flipped_byte_in_a_payload_fails_naming_its_seq(make_bundle, verify):
    doc = make_bundle(5)
    row(doc, 2)["payload"] = flip(row(doc, 2)["payload"], 20)
    assert messages(verify(doc)) == ["seq 2: payload does not match payload_sha256 in the header"]


def test_a_flipped_byte_in_a_signature_fails_naming_its_seq(make_bundle, verify):
    doc = make_bundle(5)
    row(doc, 4)["signature"] = flip(row(doc, 4)["signature"], 10)
    assert messages(verify(doc)) == [f"seq 4: signature does not verify with key {SERVER.kid}"]


def test_a_tampered_manifest_fails_its_signature(make_bundle, verify):
    doc = make_bundle(3)
    manifest = manifest_of(doc)
    manifest["exported_at"] = "2030-01-01T00:00:00Z"
    doc["manifest"] = b64(compact(manifest))
    assert messages(verify(doc)) == [f"manifest signature does not verify with key {SERVER.kid}"]


def test_a_deleted_event_is_reported_where_the_gap_is(make_bundle, verify):
    doc = make_bundle(5)
    doc["events"].remove(row(doc, 3))
    found = messages(verify(doc))
    assert "seq 4: out of sequence: expected seq 3 next, seq 3 missing or moved" in found
    assert "seq 4: prev_hash does not match the entry hash of the preceding event (seq 2)" in found
    assert "manifest event_count is 5 but the events give 4" in found


def test_swapped_events_are_reported_as_out_of_order(make_bundle, verify):
    doc = make_bundle(5)
    doc["events"][1], doc["events"][2] = doc["events"][2], doc["events"][1]
    found = messages(verify(doc))
    assert found == [
        "seq 3: out of sequence: expected seq 2 next, seq 2 missing or moved",
        "seq 3: prev_hash does not match the entry hash of the preceding event (seq 1)",
        "seq 2: out of sequence: expected seq 4 next, seq 2 is duplicated or moved",
        "seq 2: prev_hash does not match the entry hash of the preceding event (seq 3)",
        "seq 4: prev_hash does not match the entry hash of the preceding event (seq 2)",
    ]


def test_a_duplicated_event_is_reported(make_bundle, verify):
    doc = make_bundle(3)
    doc["events"].insert(2, dict(row(doc, 2)))
    found = messages(verify(doc))
    assert "seq 2: out of sequence: expected seq 3 next, seq 2 is duplicated or moved" in found


def test_a_truncated_tail_fails_against_the_manifest(make_bundle, verify):
    doc = make_bundle(5)
    del doc["events"][3:]
    found = messages(verify(doc))
    # Every remaining event is intact: only the signed manifest can notice.
    assert all(not m.startswith("seq ") for m in found)
    assert "manifest event_count is 5 but the events give 3" in found
    assert "manifest last_seq is 5 but the events give 3" in found
    assert any(m.startswith("manifest head_hash is ") for m in found)


def test_events_appended_after_the_manifest_was_signed_fail(make_bundle, verify):
    doc = make_bundle(3)
    longer = make_bundle(4)
    doc["events"].append(row(longer, 4))  # a genuine, correctly signed later event
    found = messages(verify(doc))
    assert "manifest event_count is 3 but the events give 4" in found
    assert "manifest last_seq is 3 but the events give 4" in found


def rewrite_with_foreign_key(doc: dict, seq: int, signer: Signer) -> None:
    """What an intruder without the server key can do: change an event and re-sign it."""
    body = {"type": "memory.stored", "memory_id": f"m{seq}", "text": "something never said"}
    payload = compact(body)
    header = header_of(doc, seq)
    header.update(payload_sha256=sha256(payload), key_id=signer.kid)
    raw = compact(header)
    row(doc, seq).update(
        header=b64(raw), entry_hash=sha256(raw), signature=b64(signer.sign(raw)), payload=b64(payload)
    )
    doc["public_keys"]["keys"].append(signer.jwk())


def test_an_event_re_signed_with_a_foreign_key_listed_in_the_bundle_breaks_the_chain(make_bundle, verify):
    doc = make_bundle(5)
    rewrite_with_foreign_key(doc, 3, INTRUDER)
    # Its own signature is valid under the key the bundle lists, but the next
    # event's prev_hash still commits to the original header.
    assert messages(verify(doc)) == [
        "seq 4: prev_hash does not match the entry hash of the preceding event (seq 3)"
    ]


def test_a_re_signed_last_event_is_caught_by_the_manifest_head_hash(make_bundle, verify):
    doc = make_bundle(5)
    rewrite_with_foreign_key(doc, 5, INTRUDER)
    found = messages(verify(doc))
    assert len(found) == 1 and found[0].startswith("manifest head_hash is ")


def test_expect_jwks_reports_an_event_signed_with_a_key_outside_it(make_bundle, verify):
    doc = make_bundle(5)
    rewrite_with_foreign_key(doc, 5, INTRUDER)
    found = messages(verify(doc, trusted_keys=load_jwks({"keys": [SERVER.jwk()]})))
    assert "seq 5: key_id intruder is not in the expected JWKS" in found


@pytest.mark.parametrize("forger_kid", ["intruder", SERVER.kid], ids=["new-kid", "server-kid"])
def test_a_wholly_forged_bundle_passes_alone_but_fails_against_the_servers_jwks(make_bundle, verify, forger_kid):
    forged = make_bundle(3, signer=Signer.generate(forger_kid))
    # The trust note in the module docstring: self-carried keys prove integrity only.
    assert verify(forged).ok
    found = messages(verify(forged, trusted_keys=load_jwks({"keys": [SERVER.jwk()]})))
    if forger_kid == SERVER.kid:
        assert f"bundle key {SERVER.kid} differs from the expected JWKS key with that id" in found
        assert f"seq 1: signature does not verify with key {SERVER.kid}" in found
        assert f"manifest signature does not verify with key {SERVER.kid}" in found
    else:
        assert "manifest key_id intruder is not in the expected JWKS" in found
        assert {"seq 1: key_id intruder is not in the expected JWKS", "seq 3: key_id intruder is not in the expected JWKS"} <= set(found)


def test_expect_jwks_accepts_a_genuine_bundle_even_with_extra_server_keys(make_bundle, verify):
    retired = Signer.generate("server-2025")
    trusted = load_jwks({"keys": [retired.jwk(), SERVER.jwk()]})
    assert verify(make_bundle(3), trusted_keys=trusted).ok


def test_a_wrong_owner_is_reported_for_every_event(make_bundle):
    stranger = {"iss": "https://auth.example.org", "sub": "user-7"}
    report = verify_events(records(make_bundle(3)), load_jwks({"keys": [SERVER.jwk()]}), log=LOG, owner=stranger)
    assert messages(report) == [
        f"seq {seq}: owner https://auth.example.org/user-42 does not match expected owner https://auth.example.org/user-7"
        for seq in (1, 2, 3)
    ]


def test_an_event_of_another_owner_inside_a_bundle_is_reported(make_bundle, verify):
    intruding_owner = {"iss": "https://auth.example.org", "sub": "user-7"}

    def other_owner(seq: int, header: dict) -> None:
        if seq == 2:
            header["owner"] = intruding_owner

    report = verify(make_bundle(3, header_hook=other_owner))
    assert messages(report) == [
        "seq 2: owner https://auth.example.org/user-7 does not match expected owner https://auth.example.org/user-42"
    ]


def test_an_event_from_another_log_is_reported(make_bundle):
    def other_log(seq: int, header: dict) -> None:
        if seq == 3:
            header["log"] = "abcdef"

    report = verify_events(records(make_bundle(3, header_hook=other_log)), load_jwks({"keys": [SERVER.jwk()]}))
    assert messages(report) == [f"seq 3: event belongs to log abcdef, expected log {LOG}"]


# ------------------------------------------------------- verify_events details


def server_keys() -> dict:
    return load_jwks({"keys": [SERVER.jwk()]})


def test_verify_events_reads_a_one_shot_iterator(make_bundle):
    report = verify_events(iter(records(make_bundle(4, redact=[1]))), server_keys(), log=LOG, owner=OWNER)
    assert report.ok and report.event_count == 4 and report.redacted_seqs == [1]


def test_without_log_and_owner_the_first_event_sets_them(make_bundle):
    report = verify_events(records(make_bundle(2)), server_keys(), log=None, owner=None)
    assert report.ok and report.log == LOG and report.owner == OWNER


def test_an_unknown_key_id_is_named(make_bundle):
    report = verify_events(records(make_bundle(1)), {}, log=LOG, owner=OWNER)
    assert messages(report) == [f"seq 1: key_id {SERVER.kid} is not in the known public keys"]


def test_a_header_with_an_extra_field_is_reported_even_when_signed(make_bundle):
    def extra(seq: int, header: dict) -> None:
        if seq == 2:
            header["note"] = "x"

    report = verify_events(records(make_bundle(2, header_hook=extra)), server_keys())
    assert messages(report) == ["seq 2: header has unexpected field(s) note"]


def test_a_header_missing_a_field_is_reported(make_bundle):
    def missing(seq: int, header: dict) -> None:
        if seq == 1:
            del header["actor"]

    report = verify_events(records(make_bundle(1, header_hook=missing)), server_keys())
    assert messages(report) == ["seq 1: header is missing field(s) actor"]


def test_a_header_with_fields_out_of_order_is_reported(make_bundle):
    def reordered(seq: int, header: dict) -> bytes:
        return compact({"log": header["log"], **header})

    report = verify_events(records(make_bundle(1, header_hook=reordered)), server_keys())
    assert messages(report) == ["seq 1: header fields are not in the canonical order"]


def test_a_header_with_a_duplicate_key_is_rejected(make_bundle):
    def duplicated(seq: int, header: dict) -> bytes:
        return compact(header)[:-1] + b',"seq":99}'

    report = verify_events(records(make_bundle(1, header_hook=duplicated)), server_keys())
    assert messages(report) == ["seq 1: header is not valid UTF-8 JSON (duplicate key 'seq')"]


def test_a_header_field_of_the_wrong_shape_is_reported(make_bundle):
    def bad(seq: int, header: dict) -> None:
        header["seq"] = True
        header["recorded_at"] = "2026-02-31T00:00:00Z"

    found = messages(verify_events(records(make_bundle(1, header_hook=bad)), server_keys()))
    assert "seq 1: header field seq must be a positive integer" in found
    assert "seq 1: header field recorded_at must be an RFC 3339 UTC timestamp ending in Z" in found


def test_a_header_seq_that_disagrees_with_the_listing_is_reported(make_bundle):
    def renumber(seq: int, header: dict) -> None:
        header["seq"] = 7

    found = messages(verify_events(records(make_bundle(1, header_hook=renumber)), server_keys()))
    assert found == ["seq 1: header says seq 7 but the event is listed as seq 1"]


def test_a_listed_event_id_or_type_that_disagrees_with_the_header_is_reported(make_bundle, verify):
    doc = make_bundle(2)
    row(doc, 2)["event_id"] = "00000000-0000-4000-8000-999999999999"
    row(doc, 2)["type"] = "memory.deleted"
    assert messages(verify(doc)) == [
        "seq 2: header event_id 00000000-0000-4000-8000-000000000002 does not match the listed event_id "
        "00000000-0000-4000-8000-999999999999",
        "seq 2: header type memory.stored does not match the listed type memory.deleted",
    ]


def test_a_payload_whose_type_differs_from_its_header_is_reported(make_bundle):
    def retype(seq: int, body: dict) -> None:
        body["type"] = "memory.deleted"

    found = messages(verify_events(records(make_bundle(1, payload_hook=retype)), server_keys()))
    assert found == ["seq 1: payload type memory.deleted does not match header type memory.stored"]


def test_a_missing_payload_on_an_unredacted_event_is_reported(make_bundle, verify):
    doc = make_bundle(3)
    row(doc, 2)["payload"] = None
    assert messages(verify(doc)) == ["seq 2: payload is missing but the event is not marked redacted"]


def test_a_payload_left_on_a_redacted_event_is_reported(make_bundle, verify):
    doc = make_bundle(3)
    row(doc, 2)["redacted"] = True
    assert messages(verify(doc)) == ["seq 2: event is marked redacted but still carries its payload"]


def test_a_wrong_first_prev_hash_is_reported(make_bundle):
    def unchained(seq: int, header: dict) -> None:
        header["prev_hash"] = "1" * 64

    found = messages(verify_events(records(make_bundle(1, header_hook=unchained)), server_keys()))
    assert found == ["seq 1: prev_hash of the first event must be 64 zeros"]


def test_problems_are_capped_and_the_rest_counted(make_bundle):
    stranger = {"iss": "https://auth.example.org", "sub": "user-7"}
    report = verify_events(records(make_bundle(MAX_PROBLEMS + 20)), server_keys(), owner=stranger)
    assert len(report.problems) == MAX_PROBLEMS + 1
    assert report.problems[-1].seq is None
    assert report.problems[-1].message == "... and 20 more problem(s) not listed"
    assert report.event_count == MAX_PROBLEMS + 20 and not report.ok


# ------------------------------------------------------------------ load_jwks


def test_load_jwks_returns_keys_by_kid():
    keys = load_jwks({"keys": [SERVER.jwk(), INTRUDER.jwk()]})
    assert set(keys) == {SERVER.kid, "intruder"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda jwk: jwk.update(kty="RSA"), "is not an Ed25519 key"),
        (lambda jwk: jwk.update(crv="X25519"), "is not an Ed25519 key"),
        (lambda jwk: jwk.update(alg="RS256"), "is not a signing key"),
        (lambda jwk: jwk.update(use="enc"), "is not a signing key"),
        (lambda jwk: jwk.update(x=jwk["x"][:-4]), "an Ed25519 key is 32"),
        (lambda jwk: jwk.update(x=jwk["x"] + "="), "unpadded base64url"),
        (lambda jwk: jwk.update(x="a+b/" * 10), "unpadded base64url"),
        (lambda jwk: jwk.pop("x"), "unpadded base64url"),
        (lambda jwk: jwk.pop("kid"), "has no kid"),
        (lambda jwk: jwk.update(d="c2VjcmV0"), "contains a private key"),
    ],
)
def test_load_jwks_rejects_a_bad_key_with_a_clear_error(change, expected):
    jwk = SERVER.jwk()
    change(jwk)
    with pytest.raises(JWKSError, match=expected):
        load_jwks({"keys": [jwk]})


@pytest.mark.parametrize("doc", [[], {"keys": {}}, {}, "keys"])
def test_load_jwks_rejects_a_document_without_a_keys_list(doc):
    with pytest.raises(JWKSError, match='"keys" list'):
        load_jwks(doc)


def test_load_jwks_rejects_a_repeated_kid():
    with pytest.raises(JWKSError, match="more than once"):
        load_jwks({"keys": [SERVER.jwk(), SERVER.jwk()]})


# ----------------------------------------------------------- malformed bundles


def _replace(doc: dict, **fields: Any) -> dict:
    return {**doc, **fields}


MALFORMED: dict[str, Callable[[dict], Any]] = {
    "a JSON list": lambda doc: [doc],
    "missing events": lambda doc: {k: v for k, v in doc.items() if k != "events"},
    "an extra top-level field": lambda doc: _replace(doc, comment="trust me"),
    "events not a list": lambda doc: _replace(doc, events={"1": doc["events"][0]}),
    "manifest not base64": lambda doc: _replace(doc, manifest="%%%"),
    "manifest not JSON": lambda doc: _replace(doc, manifest=b64(b"not json")),
    "manifest missing a field": lambda doc: _replace(
        doc, manifest=b64(compact({k: v for k, v in manifest_of(doc).items() if k != "head_hash"}))
    ),
    "bad public keys": lambda doc: _replace(doc, public_keys={"keys": [{"kid": "k", "kty": "RSA"}]}),
    "event row missing a field": lambda doc: _replace(
        doc, events=[{k: v for k, v in doc["events"][0].items() if k != "signature"}]
    ),
    "event header not base64": lambda doc: _replace(doc, events=[{**doc["events"][0], "header": "@@"}]),
    "event seq a string": lambda doc: _replace(doc, events=[{**doc["events"][0], "seq": "1"}]),
}


@pytest.mark.parametrize("damage", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_bundle_exits_non_zero_with_a_message(make_bundle, tmp_path, capsys, damage):
    path = write_json(tmp_path, MALFORMED[damage](make_bundle(2)))
    assert main([str(path)]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("ERROR: ") and "Traceback" not in out + err
    with pytest.raises(BundleError):
        verify_bundle(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\xff\xfe garbage", b"not json at all", b"{\"manifest\": ", b"[" * 100_000, b"NaN"],
    ids=["empty", "binary", "text", "cut-off", "deeply-nested", "nan"],
)
def test_a_garbage_file_exits_non_zero_with_a_message(tmp_path, capsys, content):
    path = tmp_path / "garbage.json"
    path.write_bytes(content)
    assert main([str(path)]) == 1
    out, err = capsys.readouterr()
    assert "is not valid UTF-8 JSON" in err and "Traceback" not in out + err


def test_a_missing_file_exits_non_zero_with_a_message(tmp_path, capsys):
    assert main([str(tmp_path / "nope.json")]) == 1
    assert "cannot read bundle" in capsys.readouterr().err


def test_a_malformed_bundle_with_json_output_still_prints_json(tmp_path, capsys):
    path = tmp_path / "garbage.json"
    path.write_text("{}")
    assert main([str(path), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False and "bundle is missing field(s)" in result["error"]


# ----------------------------------------------------------------------- CLI


def test_main_prints_a_one_line_summary_for_a_good_bundle(make_bundle, tmp_path, capsys):
    doc = make_bundle(4, redact=[3])
    assert main([str(write_json(tmp_path, doc))]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line == (
        f"OK: log {LOG}, owner https://auth.example.org/user-42, 4 events, "
        f"head {row(doc, 4)['entry_hash']}, 1 redacted"
    )


def test_main_lists_each_problem_and_fails(make_bundle, tmp_path, capsys):
    doc = make_bundle(4)
    row(doc, 2)["signature"] = flip(row(doc, 2)["signature"], 0)
    assert main([str(write_json(tmp_path, doc))]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: ")
    assert f"  seq 2: signature does not verify with key {SERVER.kid}" in out.splitlines()


def test_json_output_parses_and_carries_the_report(make_bundle, tmp_path, capsys):
    doc = make_bundle(3, redact=[1])
    row(doc, 3)["payload"] = flip(row(doc, 3)["payload"], 5)
    assert main([str(write_json(tmp_path, doc)), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert result["redacted_seqs"] == [1]
    assert result["problems"] == [{"seq": 3, "message": "seq 3: payload does not match payload_sha256 in the header"}]
    assert result["keys_checked_against"] == "bundle"


def test_expect_jwks_on_the_command_line_reports_a_foreign_key(make_bundle, tmp_path, capsys):
    doc = make_bundle(5)
    rewrite_with_foreign_key(doc, 5, INTRUDER)
    jwks = write_json(tmp_path, {"keys": [SERVER.jwk()]}, "server-jwks.json")
    assert main([str(write_json(tmp_path, doc)), "--expect-jwks", str(jwks)]) == 1
    assert "  seq 5: key_id intruder is not in the expected JWKS" in capsys.readouterr().out.splitlines()


def test_expect_jwks_on_the_command_line_accepts_the_genuine_bundle(make_bundle, tmp_path, capsys):
    jwks = write_json(tmp_path, {"keys": [SERVER.jwk()]}, "server-jwks.json")
    assert main([str(write_json(tmp_path, make_bundle(2))), "--expect-jwks", str(jwks), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["keys_checked_against"] == "expected JWKS"


def test_a_bad_expect_jwks_file_exits_non_zero_with_a_message(make_bundle, tmp_path, capsys):
    jwks = write_json(tmp_path, {"keys": [{"kid": "x", "kty": "OKP", "crv": "Ed25519", "x": "AA"}]}, "jwks.json")
    assert main([str(write_json(tmp_path, make_bundle(1))), "--expect-jwks", str(jwks)]) == 1
    assert "an Ed25519 key is 32" in capsys.readouterr().err


def test_the_module_runs_with_python_dash_m(make_bundle, tmp_path):
    bundle = write_json(tmp_path, make_bundle(2))
    done = subprocess.run(
        [sys.executable, "-m", "memory.verify_export", str(bundle)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: ")


# --------------------------------------------------------------- standalone


def test_the_module_imports_only_the_standard_library_and_cryptography():
    tree = ast.parse(MODULE_FILE.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top == "cryptography", name


def test_a_copy_of_the_file_alone_verifies_a_bundle(make_bundle, tmp_path):
    copy = tmp_path / "elsewhere" / "verify_export.py"
    copy.parent.mkdir()
    shutil.copy(MODULE_FILE, copy)
    bundle = write_json(tmp_path, make_bundle(3, redact=[2]))
    done = subprocess.run(
        [sys.executable, "-I", str(copy), str(bundle), "--json"],
        cwd=copy.parent, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["redacted_seqs"] == [2]


# ------------------------------------------------------------------ property


@st.composite
def bundle_and_flip(draw: st.DrawFn) -> tuple[dict, int, str, int, int]:
    n_events = draw(st.integers(min_value=1, max_value=5))
    redact = draw(st.sets(st.integers(min_value=1, max_value=n_events)))
    seq = draw(st.integers(min_value=1, max_value=n_events))
    part = "header" if seq in redact else draw(st.sampled_from(["header", "payload"]))
    return (
        build_bundle(n_events, redact=sorted(redact)),
        seq,
        part,
        draw(st.integers(min_value=0, max_value=10_000)),
        draw(st.integers(min_value=1, max_value=255)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundle_and_flip())
def test_any_single_byte_flip_in_a_header_or_payload_fails_verification(case):
    doc, seq, part, position, mask = case
    with tempfile.TemporaryDirectory() as directory:
        assert verify_bundle(write_json(Path(directory), doc)).ok
        row(doc, seq)[part] = flip(row(doc, seq)[part], position, mask)
        report = verify_bundle(write_json(Path(directory), doc))
    assert not report.ok
    assert any(p.seq == seq for p in report.problems), messages(report)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document a value could be swapped for another."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += json_paths(child, (*prefix, index))
    return paths


def replace_at(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replace_at(value[path[0]], path[1:], new)
    return copy


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_json_value_swapped_anywhere_gives_a_report_or_a_bundle_error(data):
    doc = build_bundle(data.draw(st.integers(min_value=0, max_value=3)), redact=[2])
    target = data.draw(st.sampled_from(["bundle", "manifest", "header"] if doc["events"] else ["bundle", "manifest"]))
    new = data.draw(json_values)
    if target == "bundle":
        doc = replace_at(doc, data.draw(st.sampled_from(json_paths(doc))), new)
    elif target == "manifest":
        manifest = manifest_of(doc)
        doc["manifest"] = b64(compact(replace_at(manifest, data.draw(st.sampled_from(json_paths(manifest))), new)))
    else:
        event = data.draw(st.sampled_from(doc["events"]))
        header = json.loads(base64.b64decode(event["header"]))
        event["header"] = b64(compact(replace_at(header, data.draw(st.sampled_from(json_paths(header))), new)))
    with tempfile.TemporaryDirectory() as directory:
        try:
            report = verify_bundle(write_json(Path(directory), doc))
        except BundleError:
            return
    assert isinstance(report, ChainReport)
