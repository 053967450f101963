"""Auditing the logs: verify a user's log and projections, export a signed bundle, and check that
no user's events or reads ever touch another user's log.

Each function reads the logs through a `LogDirectory` (`logs`; default: the SQLite files under
`data_dir`), so it audits a PostgreSQL log of record the same way; projections are always the
files under `data_dir`.

The chain itself is checked by `memory.verify_export`, the same standalone code a third party
runs on an export, so the service and the auditor cannot disagree about what "verifies" means.
"""

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from memory.events import MemoriesLinked, MemoriesRead, decode_payload
from memory.identity import Identity
from memory.errors import LogIntegrityError
from memory.log import GENESIS_HASH, EventStore, head_problem, user_folder
from memory.logs import LogDirectory, SqliteLogDirectory
from memory.signing import KeyRing
from memory.userstore import build_projections
from memory.verify_export import ChainReport, EventRecord, Problem, load_jwks, verify_events
from projections.base import PROJECTIONS_FILE, open_projection_db, stored_checkpoints
from projections.embedder import Embedder

__all__ = ["verify_user", "export_user", "isolation_check", "Violation"]


def _records(log: EventStore, after_seq: int = 0) -> Iterator[EventRecord]:
    for row in log.read_raw(after_seq):
        yield EventRecord(seq=row.seq, event_id=row.event_id, type=row.type, header=row.header,
                          entry_hash=row.entry_hash, signature=row.signature, payload=row.payload,
                          redacted=bool(row.redacted))


def _directory(data_dir: Path, keys: KeyRing, logs: LogDirectory | None) -> LogDirectory:
    return logs if logs is not None else SqliteLogDirectory(data_dir, keys)


def verify_user(data_dir: str | Path, owner: Identity, keys: KeyRing, embedder: Embedder | None,
                progress: Callable[[int], None] | None = None,
                after: tuple[int, str] | None = None, logs: LogDirectory | None = None) -> ChainReport:
    """Chain, signatures and seq contiguity, then: do the projections on disk equal a rebuild?
    Without an embedder only the chain is checked (what a page can afford on every view), and
    `after=(seq, entry_hash)` of an event verified before checks only what follows it."""
    data_dir = Path(data_dir)
    log = _directory(data_dir, keys, logs).open(owner)
    try:
        def counted() -> Iterator[EventRecord]:
            for i, record in enumerate(_records(log, after[0] if after else 0), 1):
                if progress and i % 1000 == 0:
                    progress(1000)
                yield record

        compromised = {r["kid"]: r["compromised_at"] for r in keys.records() if r["compromised_at"]}
        report = verify_events(counted(), load_jwks(keys.jwks()), log=owner.key,
                               owner={"iss": owner.iss, "sub": owner.sub}, after=after, compromised=compromised)
        report.owner = {"iss": owner.iss, "sub": owner.sub}
        # The chain cannot tell that its end was cut off; the signed head anchor can.
        cut = head_problem(log, keys)
        if cut is not None:
            report.problems.append(Problem(*cut))
        if report.ok and embedder is not None:
            report.problems += _projection_problems(user_folder(data_dir, owner) / PROJECTIONS_FILE, log,
                                                    embedder)
        return report
    finally:
        log.close()


def _projection_problems(path: Path, log: EventStore, embedder: Embedder) -> list[Problem]:
    if not path.exists():
        return []  # nothing derived yet: the next open builds it
    disk = open_projection_db(path)
    try:
        checkpoints = stored_checkpoints(disk)
        if not checkpoints:
            return []
        ahead = max(checkpoints.values())
        if ahead > log.last_seq():
            return [Problem(ahead, f"projections claim seq {ahead} but the log ends at {log.last_seq()}")]
        problems = []
        # Each projection against a rebuild to its own checkpoint: the embeddings may trail the
        # others by the few events whose model call was still to come.
        # One rebuild, stopped at each checkpoint in turn.
        fresh = build_projections(open_projection_db(":memory:"), embedder, cache_db=disk)
        for upto in sorted(set(checkpoints.values())):
            fresh.projections.catch_up(log, to_seq=upto)
            for projection in fresh.projections.projections:
                if checkpoints.get(projection.name) != upto:
                    continue
                mine = projection.snapshot(disk)
                theirs = projection.snapshot(fresh.db)
                if mine != theirs:
                    diff = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
                    problems.append(Problem(
                        upto, f"projection {projection.name!r} disagrees with the log at seq {upto} "
                              f"(row {diff}: {len(mine)} rows on disk, {len(theirs)} rebuilt)"))
        fresh.db.close()
        return problems
    finally:
        disk.close()


def export_user(data_dir: str | Path, owner: Identity, keys: KeyRing, output: str | Path,
                progress: Callable[[int], None] | None = None, logs: LogDirectory | None = None) -> dict:
    """Write a self-contained bundle: signed manifest, events as stored, and public keys."""
    log = _directory(Path(data_dir), keys, logs).open(owner)
    # A signed manifest must not vouch for a log whose end was cut off.
    cut = head_problem(log, keys)
    if cut is not None:
        log.close()
        raise LogIntegrityError(f"not exported: {cut[1]}")
    output = Path(output)
    tmp = output.with_name(output.name + ".partial")
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    count, first, last, head = 0, None, 0, GENESIS_HASH
    try:
        with tmp.open("w") as out:
            out.write('{"events": [')
            for record in _records(log):
                out.write(("," if count else "") + "\n" + json.dumps({
                    "seq": record.seq, "event_id": record.event_id, "type": record.type,
                    "header": b64(record.header), "entry_hash": record.entry_hash,
                    "signature": b64(record.signature),
                    "payload": None if record.payload is None else b64(record.payload),
                    "redacted": record.redacted,
                }))
                count += 1
                first = first or record.seq
                last, head = record.seq, record.entry_hash
                if progress and count % 1000 == 0:
                    progress(1000)
            manifest = {
                "format": "memory-export", "version": 1, "log": owner.key,
                "owner": {"iss": owner.iss, "sub": owner.sub}, "event_count": count,
                "first_seq": first or (1 if count else 0), "last_seq": last, "head_hash": head,
                "exported_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "key_id": keys.active_key_id,
            }
            manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
            # The key the manifest names, even if a rotation landed since it was written.
            _, signature = keys.sign(manifest_bytes, manifest["key_id"])
            out.write("\n],\n" + json.dumps({
                "manifest": b64(manifest_bytes), "manifest_signature": b64(signature),
                "public_keys": keys.jwks(),
            })[1:])
        tmp.replace(output)
        return manifest
    finally:
        tmp.unlink(missing_ok=True)
        log.close()


class Violation(msgspec.Struct):
    user: str
    seq: int | None
    message: str


def isolation_check(data_dir: str | Path, keys: KeyRing, logs: LogDirectory | None = None) -> list[Violation]:
    """Every event in every log names that log's owner, and no read or link ever returned an
    id that is not a memory of the same user."""
    logs = _directory(Path(data_dir), keys, logs)
    owners = list(logs.list_logs())
    ids_of: dict[str, set[str]] = {}
    violations: list[Violation] = []
    for name, owner in owners:
        if name != owner.key:
            violations.append(Violation(str(owner), None, f"log {name} is not the owner's key {owner.key}"))
        ids_of[owner.key] = set()
        log = logs.open(owner)
        try:
            for record in _records(log):
                h = json.loads(record.header)
                if h.get("log") != owner.key or h.get("owner") != {"iss": owner.iss, "sub": owner.sub}:
                    violations.append(Violation(str(owner), record.seq,
                                                f"seq {record.seq} names another owner: {h.get('owner')}"))
                if record.type == "memory.stored":
                    ids_of[owner.key].add(record.event_id)
        finally:
            log.close()
    # Ids are unique within one log only: two users may hold the same id, each their own memory.
    owners_of_id: dict[str, set[str]] = {}
    for key, ids in ids_of.items():
        for i in ids:
            owners_of_id.setdefault(i, set()).add(key)
    for _, owner in owners:
        log = logs.open(owner)
        try:
            for row in log.read_raw():
                seq, type_, version, payload = row.seq, row.type, row.schema_version, row.payload
                if payload is None or type_ not in ("memories.read", "memories.linked"):
                    continue
                event = decode_payload(payload, type_, version)
                touched = event.returned_ids if isinstance(event, MemoriesRead) else (
                    [event.source_id, event.target_id] if isinstance(event, MemoriesLinked) else [])
                for memory_id in touched:
                    holders = owners_of_id.get(memory_id, set())
                    if owner.key not in holders:
                        whose = f"a memory of user {min(holders)}" if holders else "no user's memory"
                        violations.append(Violation(str(owner), seq, f"seq {seq} ({type_}) returned {memory_id}, {whose}"))
        finally:
            log.close()
    return violations

