"""Offline verifier for memory-service event logs and export bundles.

This file is deliberately self-contained: it imports only the Python standard
library and ``cryptography``, so anyone can copy it on its own and check an
export without installing (or trusting) the rest of the service::

    python verify_export.py BUNDLE.json [--json] [--expect-jwks JWKS.json]
    python -m memory.verify_export BUNDLE.json ...

The service itself uses :func:`verify_events` for ``memory verify`` on live logs.

Event format
------------
Each user has one append-only log. Every event consists of:

``header``
    The signed bytes: compact UTF-8 JSON with exactly these keys, in order::

        {"format":1,"log":"<user_key hex>","owner":{"iss":..,"sub":..},"seq":N,
         "event_id":"<uuid>","type":"memory.stored","schema_version":1,
         "recorded_at":"<rfc3339 UTC, Z>","actor":{"sub":..,"client_id":.. or null},
         "request_id":.. or null,"payload_sha256":"<hex>","prev_hash":"<hex64>",
         "key_id":"<kid>"}

    The header is parsed to check its fields, but the hash and the signature
    are always computed over the bytes exactly as stored: re-serialising would
    make the result depend on this JSON encoder rather than on the evidence.
``entry_hash``
    ``sha256(header)`` in hex. Event 1 has ``prev_hash`` of 64 zeros and event
    k's ``prev_hash`` is event k-1's entry hash, so the chain fixes the order
    and the content of every header before it.
``signature``
    Ed25519 over the header bytes, by the key named in ``key_id``.
``payload``
    UTF-8 JSON object whose ``"type"`` equals the header's type, with
    ``sha256(payload) == payload_sha256``; or null when the payload was
    redacted for erasure. The chain commits to the payload's hash, not the
    payload, so a redacted event still verifies; it is reported as redacted.
    Payloads of schema version 2 carry a random ``salt``, so the hash a
    redacted event keeps confirms no guess of what it said.

Public keys come as a JWKS document of OKP/Ed25519 keys (``x`` is the raw
32-byte key in unpadded base64url).

Export bundle
-------------
One JSON file::

    {"manifest": "<base64 of manifest bytes>",
     "manifest_signature": "<base64 Ed25519 signature over the manifest bytes>",
     "public_keys": {JWKS},
     "events": [{"seq":1,"event_id":..,"type":..,"header":"<base64>",
                 "entry_hash":"<hex>","signature":"<base64>",
                 "payload":"<base64>" or null,"redacted":false}, ...]}

The manifest is compact JSON naming the log, its owner, ``event_count``,
``first_seq``, ``last_seq``, ``head_hash`` (entry hash of the last event, or 64
zeros for an empty log), ``exported_at`` and the ``key_id`` that signed it.
Because the manifest is signed and pins the count and the head of the chain,
dropping events from the tail or appending events is detected, not just
tampering inside the chain.

Trust
-----
A bundle carries its own public keys. Verifying against them proves that the
bundle is internally consistent and was signed by whoever holds those keys --
nothing more: someone who forges a whole bundle can include their own keys.
To prove the bundle came from a particular server, compare its key ids/JWKS
with the server's published JWKS, or pass that JWKS with ``--expect-jwks
FILE``: every key the bundle uses (for the manifest and for each event) must
then be in that file, and signatures are checked against the file's keys
rather than the bundle's.

Exit status of the command line: 0 when the bundle verifies, 1 when it does
not or cannot be read, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "MAX_PROBLEMS",
    "ZERO_HASH",
    "BundleError",
    "ChainReport",
    "EventRecord",
    "JWKSError",
    "Problem",
    "load_jwks",
    "main",
    "verify_bundle",
    "verify_events",
]

ZERO_HASH = "0" * 64
# A badly damaged log can produce a problem per event; past this many the rest
# are only counted, so a report on a million-event log stays readable.
MAX_PROBLEMS = 100

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# re.ASCII: \d would otherwise accept digits from every script.
_UTC_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z", re.ASCII)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})", re.ASCII)
# Values from a bundle end up on a terminal; anything outside this set is shown
# through repr() so control characters cannot disguise the output.
_PLAIN_TEXT = re.compile(r"[\w.:@/+=|#~-]{1,200}", re.ASCII)


class BundleError(ValueError):
    """The bundle is unreadable or not shaped like an export bundle at all."""


class JWKSError(ValueError):
    """A JWKS document or one of its keys is unusable."""


@dataclass(frozen=True)
class Problem:
    """One verification failure; ``seq`` is None for bundle-level problems."""

    seq: int | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class ChainReport:
    """The outcome of verifying one log; ``ok`` when no problem was found."""

    log: str
    event_count: int
    last_seq: int
    head_hash: str
    redacted_seqs: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    owner: dict[str, str] | None = None
    #: How many events each key signed (signatures that verified).
    signed_by: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "log": self.log,
            "owner": self.owner,
            "event_count": self.event_count,
            "last_seq": self.last_seq,
            "head_hash": self.head_hash,
            "redacted_seqs": list(self.redacted_seqs),
            "signed_by": dict(self.signed_by),
            "problems": [{"seq": p.seq, "message": p.message} for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One stored event as listed by its source (a bundle row or a log table row)."""

    seq: int
    event_id: str
    type: str
    header: bytes
    entry_hash: str
    signature: bytes
    payload: bytes | None
    redacted: bool


# --------------------------------------------------------------------------- JSON


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys while other parsers keep the first;
    # a signed document that means different things to different readers is
    # rejected rather than interpreted.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _strict_json(data: bytes | str) -> Any:
    """Parse strict JSON (UTF-8 only, no duplicate keys, no NaN); raise ValueError."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(
            text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None


# ------------------------------------------------------------------- field shapes


def _is_int(value: Any) -> bool:
    # bool is an int subclass; true must not pass for 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_timestamp(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            return False
        try:
            datetime.fromisoformat(value)  # the regex cannot reject 2026-02-31
        except ValueError:
            return False
        return True

    return check


def _is_owner(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"iss", "sub"}
        and _is_text(value["iss"])
        and _is_text(value["sub"])
    )


def _is_actor(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"sub", "client_id"}
        and _is_text(value["sub"])
        and (value["client_id"] is None or isinstance(value["client_id"], str))
    )


_Rule = tuple[Callable[[Any], bool], str]

_HEADER_RULES: dict[str, _Rule] = {
    "format": (lambda v: _is_int(v) and v == 1, "must be 1"),
    "log": (lambda v: isinstance(v, str) and _HEX.fullmatch(v) is not None, "must be lowercase hex"),
    "owner": (_is_owner, 'must be {"iss": str, "sub": str}'),
    "seq": (lambda v: _is_int(v) and v >= 1, "must be a positive integer"),
    "event_id": (_is_uuid, "must be a UUID"),
    "type": (_is_text, "must be a non-empty string"),
    "schema_version": (lambda v: _is_int(v) and v >= 1, "must be a positive integer"),
    "recorded_at": (_is_timestamp(_UTC_TIMESTAMP), "must be an RFC 3339 UTC timestamp ending in Z"),
    "actor": (_is_actor, 'must be {"sub": str, "client_id": str or null}'),
    "request_id": (lambda v: v is None or isinstance(v, str), "must be a string or null"),
    "payload_sha256": (_is_hex64, "must be 64 lowercase hex digits"),
    "prev_hash": (_is_hex64, "must be 64 lowercase hex digits"),
    "key_id": (_is_text, "must be a non-empty string"),
}

_MANIFEST_RULES: dict[str, _Rule] = {
    "format": (lambda v: v == "memory-export", 'must be "memory-export"'),
    "version": (lambda v: _is_int(v) and v == 1, "must be 1"),
    "log": _HEADER_RULES["log"],
    "owner": _HEADER_RULES["owner"],
    "event_count": (lambda v: _is_int(v) and v >= 0, "must be a non-negative integer"),
    "first_seq": (lambda v: _is_int(v) and v >= 1, "must be a positive integer"),
    "last_seq": (lambda v: _is_int(v) and v >= 0, "must be a non-negative integer"),
    "head_hash": (_is_hex64, "must be 64 lowercase hex digits"),
    "exported_at": (_is_timestamp(_RFC3339), "must be an RFC 3339 timestamp"),
    "key_id": (_is_text, "must be a non-empty string"),
}


def _shape_errors(obj: Any, rules: Mapping[str, _Rule], what: str) -> list[str]:
    """Describe how ``obj`` departs from ``rules`` (exact keys, order, value shapes)."""
    if not isinstance(obj, dict):
        return [f"{what} is not a JSON object"]
    missing = [name for name in rules if name not in obj]
    extra = [name for name in obj if name not in rules]
    errors = []
    if missing:
        errors.append(f"{what} is missing field(s) {', '.join(missing)}")
    if extra:
        errors.append(f"{what} has unexpected field(s) {', '.join(_show(k) for k in extra)}")
    if not missing and not extra and list(obj) != list(rules):
        errors.append(f"{what} fields are not in the canonical order")
    for name, (valid, expectation) in rules.items():
        if name in obj and not valid(obj[name]):
            errors.append(f"{what} field {name} {expectation}")
    return errors


def _parse_signed_json(data: bytes, rules: Mapping[str, _Rule], what: str) -> tuple[Any, list[str]]:
    """Parse and shape-check; returns whatever parsed (None if nothing) and the errors."""
    try:
        obj = _strict_json(data)
    except ValueError as exc:
        return None, [f"{what} is not valid UTF-8 JSON ({exc})"]
    return obj, _shape_errors(obj, rules, what)


# ------------------------------------------------------------------------ display


def _show(value: Any) -> str:
    if isinstance(value, str) and _PLAIN_TEXT.fullmatch(value):
        return value
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _show_owner(owner: Any) -> str:
    if isinstance(owner, dict):
        return f"{_show(owner.get('iss'))}/{_show(owner.get('sub'))}"
    return _show(owner)


# ------------------------------------------------------------------------- events


class _Problems:
    """Collects problems up to a cap and counts the rest."""

    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        self._limit = limit
        self._listed: list[Problem] = []
        self._omitted = 0

    def add(self, seq: int | None, message: str) -> None:
        if len(self._listed) >= self._limit:
            self._omitted += 1
            return
        text = message if seq is None else f"seq {seq}: {message}"
        self._listed.append(Problem(seq, text))

    def finish(self) -> list[Problem]:
        if not self._omitted:
            return list(self._listed)
        return [*self._listed, Problem(None, f"... and {self._omitted} more problem(s) not listed")]


@dataclass
class _ChainState:
    """What the next event is checked against; the only state kept while streaming."""

    log: str | None
    owner: dict | None
    next_seq: int = 1
    prev_hash: str = ZERO_HASH
    prev_seq: int | None = None
    first_seq: int | None = None
    last_seq: int = 0
    count: int = 0
    redacted_seqs: list[int] = field(default_factory=list)
    signed_by: dict[str, int] = field(default_factory=dict)

    def advance(self, seq: int, entry_hash: str) -> None:
        self.prev_hash = entry_hash
        self.count += 1
        if not _is_int(seq):  # already reported; keep the numbers meaningful
            self.next_seq += 1
            return
        if self.first_seq is None:
            self.first_seq = seq
        # max() so one late event is reported once, not as a cascade of gaps.
        self.next_seq = max(self.next_seq, seq + 1)
        self.prev_seq = seq
        self.last_seq = seq


def _check_sequence(rec: EventRecord, header: dict | None, state: _ChainState, report: Callable[[str], None]) -> None:
    if header is not None and header["seq"] != rec.seq:
        report(f"header says seq {header['seq']} but the event is listed as seq {_show(rec.seq)}")
    if not _is_int(rec.seq):
        report(f"listed seq {_show(rec.seq)} is not an integer")
    elif rec.seq > state.next_seq:
        missing = str(state.next_seq) if rec.seq == state.next_seq + 1 else f"{state.next_seq}..{rec.seq - 1}"
        report(f"out of sequence: expected seq {state.next_seq} next, seq {missing} missing or moved")
    elif rec.seq < state.next_seq:
        report(f"out of sequence: expected seq {state.next_seq} next, seq {rec.seq} is duplicated or moved")


def _check_listing(rec: EventRecord, header: dict, report: Callable[[str], None]) -> None:
    # The listed event_id/type are unsigned conveniences; they must not say
    # something different from the signed header.
    if header["event_id"] != rec.event_id:
        report(f"header event_id {_show(header['event_id'])} does not match the listed event_id {_show(rec.event_id)}")
    if header["type"] != rec.type:
        report(f"header type {_show(header['type'])} does not match the listed type {_show(rec.type)}")


def _check_log_and_owner(header: dict, state: _ChainState, report: Callable[[str], None]) -> None:
    # Without an expected log/owner the first event sets them: one log never
    # mixes events of two users.
    if state.log is None:
        state.log = header["log"]
    elif header["log"] != state.log:
        report(f"event belongs to log {header['log']}, expected log {_show(state.log)}")
    if state.owner is None:
        state.owner = header["owner"]
    elif header["owner"] != state.owner:
        report(f"owner {_show_owner(header['owner'])} does not match expected owner {_show_owner(state.owner)}")


def _check_prev_hash(header: dict, state: _ChainState, report: Callable[[str], None]) -> None:
    if header["prev_hash"] == state.prev_hash:
        return
    if state.prev_seq is None:
        report("prev_hash of the first event must be 64 zeros")
    else:
        report(f"prev_hash does not match the entry hash of the preceding event (seq {_show(state.prev_seq)})")


def _check_signature(
    header_bytes: bytes,
    signature: bytes,
    key_id: str,
    public_keys: Mapping[str, Ed25519PublicKey],
    key_source: str,
    report: Callable[[str], None],
) -> bool:
    key = public_keys.get(key_id)
    if key is None:
        report(f"key_id {_show(key_id)} is not in {key_source}")
    elif not _signature_valid(key, signature, header_bytes):
        report(f"signature does not verify with key {_show(key_id)}")
    else:
        return True
    return False


def _instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _check_compromise(header: dict, key_id: str, compromised: Mapping[str, str],
                      report: Callable[[str], None]) -> None:
    # A leaked key can sign anything: what it signed after it was known to have leaked is suspect.
    since = compromised.get(key_id)
    if since is not None and _instant(header["recorded_at"]) >= _instant(since):
        report(f"signed by key {_show(key_id)} after it was marked compromised ({since})")


def _signature_valid(key: Ed25519PublicKey, signature: Any, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def _as_bytes(value: Any) -> bytes | None:
    # Database drivers may hand back bytearray or memoryview for a BLOB.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return None


def _check_payload(rec: EventRecord, header: dict | None, state: _ChainState, report: Callable[[str], None]) -> None:
    if rec.payload is None:
        if rec.redacted:
            state.redacted_seqs.append(rec.seq)
        else:
            report("payload is missing but the event is not marked redacted")
        return
    payload = _as_bytes(rec.payload)
    if payload is None:
        report("payload is not bytes")
    elif header is not None:
        _check_payload_body(payload, header, report)
    if rec.redacted:
        report("event is marked redacted but still carries its payload")


def _check_payload_body(payload: bytes, header: dict, report: Callable[[str], None]) -> None:
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        report("payload does not match payload_sha256 in the header")
        return
    # The hash matched, so whatever is wrong below was signed that way.
    try:
        body = _strict_json(payload)
    except ValueError as exc:
        report(f"payload is not valid UTF-8 JSON ({exc})")
        return
    if not isinstance(body, dict):
        report("payload is not a JSON object")
    elif body.get("type") != header["type"]:
        report(f"payload type {_show(body.get('type'))} does not match header type {_show(header['type'])}")


def _check_event(
    rec: EventRecord,
    state: _ChainState,
    public_keys: Mapping[str, Ed25519PublicKey],
    key_source: str,
    problems: _Problems,
    compromised: Mapping[str, str],
) -> None:
    def report(message: str) -> None:
        problems.add(rec.seq if _is_int(rec.seq) else None, message)

    header_bytes = _as_bytes(rec.header)
    if header_bytes is None:
        report("header is not bytes")
        header_bytes = b""
    parsed, errors = _parse_signed_json(header_bytes, _HEADER_RULES, "header")
    for error in errors:
        report(error)
    header = None if errors else parsed
    _check_sequence(rec, header, state, report)
    if header is not None:
        _check_listing(rec, header, report)
        _check_log_and_owner(header, state, report)
        _check_prev_hash(header, state, report)
    # Chain on the hash of the bytes actually present, not the listed one, so a
    # damaged header also shows up as a broken link at the next event.
    actual_hash = hashlib.sha256(header_bytes).hexdigest()
    if rec.entry_hash != actual_hash:
        report("entry_hash does not match sha256 of the header")
    key_id = parsed.get("key_id") if isinstance(parsed, dict) else None
    # Checked even when other fields are malformed: whether the key holder
    # signed these exact bytes is the most telling fact about a damaged header.
    if _is_text(key_id) and _check_signature(header_bytes, rec.signature, key_id, public_keys, key_source, report):
        state.signed_by[key_id] = state.signed_by.get(key_id, 0) + 1
        if header is not None:
            _check_compromise(header, key_id, compromised, report)
    _check_payload(rec, header, state, report)
    state.advance(rec.seq, actual_hash)


def _verify_stream(
    events: Iterable[EventRecord],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    log: str | None,
    owner: dict | None,
    problems: _Problems,
    key_source: str,
    after: tuple[int, str] | None = None,
    compromised: Mapping[str, str] | None = None,
) -> tuple[ChainReport, _ChainState]:
    state = _ChainState(log=log, owner=dict(owner) if owner is not None else None)
    if after is not None:
        state.prev_seq, state.prev_hash = after
        state.last_seq, state.next_seq = after[0], after[0] + 1
    for rec in events:
        _check_event(rec, state, public_keys, key_source, problems, compromised or {})
    report = ChainReport(
        log=state.log or "",
        event_count=state.count,
        last_seq=state.last_seq,
        head_hash=state.prev_hash,
        redacted_seqs=state.redacted_seqs,
        owner=state.owner,
        signed_by=state.signed_by,
    )
    return report, state


def verify_events(
    events: Iterable[EventRecord],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    log: str | None = None,
    owner: dict | None = None,
    after: tuple[int, str] | None = None,
    compromised: Mapping[str, str] | None = None,
) -> ChainReport:
    """Verify one log's events, read once in order, against ``public_keys``.

    ``log``/``owner``, when given, must match every header; when None they are
    taken from the first event and every later event must agree. The events
    must run contiguously from seq 1, or, with ``after=(seq, entry_hash)`` of an
    event already verified, from the seq after it and chained to that hash.
    Checking continues past problems so the report lists all of them (up to
    :data:`MAX_PROBLEMS`, then a count). ``compromised`` maps a key id to the
    moment (RFC 3339) it was marked compromised: an event it signed at or after
    that moment is a problem. The report counts the events each key signed.
    """
    problems = _Problems()
    report, _ = _verify_stream(
        events, public_keys, log=log, owner=owner, problems=problems, key_source="the known public keys",
        after=after, compromised=compromised,
    )
    report.problems = problems.finish()
    return report


# ------------------------------------------------------------------------- JWKS


def load_jwks(doc: Any) -> dict[str, Ed25519PublicKey]:
    """Turn a JWKS document into ``{kid: Ed25519PublicKey}``; raise JWKSError if unusable."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JWKSError('JWKS must be a JSON object with a "keys" list')
    keys: dict[str, Ed25519PublicKey] = {}
    for index, jwk in enumerate(doc["keys"]):
        kid, key = _load_jwk(jwk, index)
        if kid in keys:
            raise JWKSError(f"JWKS lists key id {_show(kid)} more than once")
        keys[kid] = key
    return keys


def _load_jwk(jwk: Any, index: int) -> tuple[str, Ed25519PublicKey]:
    where = f"JWKS key #{index}"
    if not isinstance(jwk, dict):
        raise JWKSError(f"{where} is not a JSON object")
    kid = jwk.get("kid")
    if not _is_text(kid):
        raise JWKSError(f"{where} has no kid")
    where = f"JWKS key {_show(kid)}"
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise JWKSError(f'{where} is not an Ed25519 key (needs "kty": "OKP", "crv": "Ed25519")')
    if jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig":
        raise JWKSError(f'{where} is not a signing key (needs "alg": "EdDSA", "use": "sig")')
    if "d" in jwk:
        # A published key set with private material means anyone could have signed.
        raise JWKSError(f"{where} contains a private key (d); refusing to use it")
    raw = _decode_jwk_x(jwk.get("x"), where)
    try:
        return kid, Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise JWKSError(f"{where} is not a valid Ed25519 public key ({exc})") from None


def _decode_jwk_x(x: Any, where: str) -> bytes:
    if not isinstance(x, str) or not _B64URL.fullmatch(x):
        raise JWKSError(f"{where} has no x in unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    except (binascii.Error, ValueError):
        raise JWKSError(f"{where} has an x that is not valid base64url") from None
    if len(raw) != 32:
        raise JWKSError(f"{where} has an x of {len(raw)} bytes; an Ed25519 key is 32")
    return raw


def _raw_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


# ----------------------------------------------------------------------- bundles

_BUNDLE_FIELDS = {"manifest", "manifest_signature", "public_keys", "events"}
_ROW_FIELDS = {"seq", "event_id", "type", "header", "entry_hash", "signature", "payload", "redacted"}


@dataclass(frozen=True)
class _Bundle:
    manifest_bytes: bytes
    manifest: dict
    manifest_signature: bytes
    public_keys: dict[str, Ed25519PublicKey]
    rows: list


def _read_json_file(path: Path, what: str) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return _strict_json(data)
    except ValueError as exc:
        raise BundleError(f"{what} {path} is not valid UTF-8 JSON ({exc})") from None


def _b64decode(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{what} is not valid base64") from None


def _exact_fields(obj: Any, expected: set[str], what: str) -> None:
    # Unsigned extra data in a bundle could be mistaken for verified data by
    # whoever reads it next, so it is refused rather than ignored.
    if not isinstance(obj, dict):
        raise BundleError(f"{what} is not a JSON object")
    missing = sorted(expected - set(obj))
    extra = sorted(set(obj) - expected)
    if missing:
        raise BundleError(f"{what} is missing field(s) {', '.join(missing)}")
    if extra:
        raise BundleError(f"{what} has unexpected field(s) {', '.join(_show(k) for k in extra)}")


def _parse_bundle(doc: Any) -> _Bundle:
    _exact_fields(doc, _BUNDLE_FIELDS, "bundle")
    manifest_bytes = _b64decode(doc["manifest"], "manifest")
    manifest, errors = _parse_signed_json(manifest_bytes, _MANIFEST_RULES, "manifest")
    if errors:
        raise BundleError("; ".join(errors))
    try:
        public_keys = load_jwks(doc["public_keys"])
    except JWKSError as exc:
        raise BundleError(f"public_keys: {exc}") from None
    if not isinstance(doc["events"], list):
        raise BundleError("events is not a JSON list")
    return _Bundle(
        manifest_bytes=manifest_bytes,
        manifest=manifest,
        manifest_signature=_b64decode(doc["manifest_signature"], "manifest_signature"),
        public_keys=public_keys,
        rows=doc["events"],
    )


def _decode_rows(rows: list) -> Iterator[EventRecord]:
    # A generator, so only one decoded event is held at a time.
    for index, row in enumerate(rows):
        yield _decode_row(row, f"events[{index}]")


def _decode_row(row: Any, where: str) -> EventRecord:
    _exact_fields(row, _ROW_FIELDS, where)
    if not _is_int(row["seq"]):
        raise BundleError(f"{where}: seq is not an integer")
    where = f"{where} (seq {row['seq']})"
    for name in ("event_id", "type", "entry_hash"):
        if not isinstance(row[name], str):
            raise BundleError(f"{where}: {name} is not a string")
    if not isinstance(row["redacted"], bool):
        raise BundleError(f"{where}: redacted is not true or false")
    payload = row["payload"]
    return EventRecord(
        seq=row["seq"],
        event_id=row["event_id"],
        type=row["type"],
        header=_b64decode(row["header"], f"{where}: header"),
        entry_hash=row["entry_hash"],
        signature=_b64decode(row["signature"], f"{where}: signature"),
        payload=None if payload is None else _b64decode(payload, f"{where}: payload"),
        redacted=row["redacted"],
    )


def _keys_to_verify_with(
    bundle_keys: Mapping[str, Ed25519PublicKey],
    trusted_keys: Mapping[str, Ed25519PublicKey] | None,
    problems: _Problems,
) -> tuple[Mapping[str, Ed25519PublicKey], str]:
    if trusted_keys is None:
        return bundle_keys, "the bundle's public_keys"
    # Verify against the trusted set only: a kid the bundle uses that is not
    # there is then reported where it is used. A same-kid key with different
    # material is called out, since its signatures would otherwise just "fail".
    for kid, key in bundle_keys.items():
        trusted = trusted_keys.get(kid)
        if trusted is not None and _raw_key(trusted) != _raw_key(key):
            problems.add(None, f"bundle key {_show(kid)} differs from the expected JWKS key with that id")
    return trusted_keys, "the expected JWKS"


def _check_manifest_signature(
    bundle: _Bundle, keys: Mapping[str, Ed25519PublicKey], key_source: str, problems: _Problems
) -> None:
    key_id = bundle.manifest["key_id"]
    key = keys.get(key_id)
    if key is None:
        problems.add(None, f"manifest key_id {_show(key_id)} is not in {key_source}")
    elif not _signature_valid(key, bundle.manifest_signature, bundle.manifest_bytes):
        problems.add(None, f"manifest signature does not verify with key {_show(key_id)}")


def _check_manifest_totals(manifest: dict, state: _ChainState, problems: _Problems) -> None:
    # These catch what no single event can: events cut from the tail, or added after.
    first_seq = state.first_seq if state.first_seq is not None else 1
    actuals = {
        "event_count": state.count,
        "first_seq": first_seq,
        "last_seq": state.last_seq,
        "head_hash": state.prev_hash,
    }
    for name, actual in actuals.items():
        if manifest[name] != actual:
            problems.add(None, f"manifest {name} is {manifest[name]} but the events give {actual}")


def verify_bundle(
    path: str | Path, *, trusted_keys: Mapping[str, Ed25519PublicKey] | None = None
) -> ChainReport:
    """Verify an export bundle file.

    Checks the manifest signature, every event (see :func:`verify_events`, with
    the manifest's log and owner as the expected ones) and that the manifest's
    count, first/last seq and head hash describe exactly the events present.
    With ``trusted_keys`` (e.g. the server's published JWKS) every signature
    must verify with a key from that set; otherwise the bundle's own keys are
    used, which proves integrity but not origin.

    Raises BundleError when the file is not a readable bundle at all.
    """
    bundle = _parse_bundle(_read_json_file(Path(path), "bundle"))
    problems = _Problems()
    keys, key_source = _keys_to_verify_with(bundle.public_keys, trusted_keys, problems)
    _check_manifest_signature(bundle, keys, key_source, problems)
    report, state = _verify_stream(
        _decode_rows(bundle.rows),
        keys,
        log=bundle.manifest["log"],
        owner=bundle.manifest["owner"],
        problems=problems,
        key_source=key_source,
    )
    _check_manifest_totals(bundle.manifest, state, problems)
    report.problems = problems.finish()
    return report


# -------------------------------------------------------------------------- CLI


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m memory.verify_export",
        description="Verify a memory-service export bundle offline.",
        epilog="The bundle carries its own public keys; pass the server's published "
        "JWKS with --expect-jwks to also prove who signed it.",
    )
    parser.add_argument("bundle", help="path to the export bundle (JSON)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--expect-jwks",
        metavar="FILE",
        help="JWKS file of trusted keys; every key the bundle uses must be in it",
    )
    return parser


def _summary(report: ChainReport) -> str:
    if report.ok:
        return (
            f"OK: log {_show(report.log)}, owner {_show_owner(report.owner)}, "
            f"{report.event_count} events, head {report.head_hash}, "
            f"{len(report.redacted_seqs)} redacted"
        )
    lines = [
        f"FAILED: log {_show(report.log)}, owner {_show_owner(report.owner)}, "
        f"{report.event_count} events:"
    ]
    lines += [f"  {problem}" for problem in report.problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _argument_parser().parse_args(argv)
    try:
        trusted = None
        if args.expect_jwks is not None:
            trusted = load_jwks(_read_json_file(Path(args.expect_jwks), "JWKS file"))
        report = verify_bundle(args.bundle, trusted_keys=trusted)
    except (BundleError, JWKSError) as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        else:
            print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**report.to_dict(), "keys_checked_against": "expected JWKS" if trusted is not None else "bundle"}))
    else:
        print(_summary(report))
        if report.ok and trusted is None:
            print("note: keys came from the bundle itself; compare them with the server's JWKS or use --expect-jwks")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
