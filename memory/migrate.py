"""`memory migrate`: copy every SQLite log of a data dir into PostgreSQL verbatim, then verify
every chain there.

Verbatim: each row is copied as stored (the signed header bytes, signature, payload or its
redaction), never sealed again, so every event keeps its signature and an export taken before
the move verifies against the same chain after it. A log is checked before it is copied (a
damaged one is not copied), and the database's signed head anchor is signed anew after the copy:
whoever migrates vouches for the end of what they copied, as a restore does.

Running it again changes nothing: events already in the database are compared (same entry hash)
and skipped; only events appended to the SQLite log since, and erasures done there since, are
carried over.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from memory.audit import verify_user
from memory.errors import LogIntegrityError, MemoryServiceError
from memory.identity import Identity
from memory.log import RawEvent
from memory.logs import SqliteLogDirectory
from memory.verify_export import ChainReport, Problem

__all__ = ["MigratedLog", "migrate", "problems_of"]

_BATCH = 1000


@dataclass
class MigratedLog:
    owner: Identity
    #: events in the SQLite log
    events: int = 0
    #: events copied by this run (0 on a second run)
    copied: int = 0
    #: events redacted in the database by this run (erased in SQLite since the last run)
    redacted: int = 0
    #: the database's chain as verified after the copy
    report: ChainReport | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.report is not None and self.report.ok


def _batches(rows: Iterator[RawEvent]) -> Iterator[list[RawEvent]]:
    while batch := list(islice(rows, _BATCH)):
        yield batch


def _migrate_one(data_dir: Path, source: SqliteLogDirectory, target, owner: Identity,
                 progress: Callable[[int], None] | None) -> MigratedLog:
    result = MigratedLog(owner)
    src = source.open(owner)
    dst = target.open(owner)
    try:
        src.check_chain()  # a damaged log is not copied: the database must not vouch for it
        result.events = src.last_seq()
        have = dst.last_seq()
        if have > result.events:
            result.problems.append(f"the database holds {have} events, the SQLite log {result.events}: "
                                   "the database was written to since (the SQLite log is not the newer one)")
            return result
        # What is already there must be the same events; erasures done in SQLite since are carried over.
        to_redact = []
        for theirs, mine in zip(dst.read_raw(), src.read_raw()):
            if theirs.entry_hash != mine.entry_hash:
                result.problems.append(f"seq {mine.seq} differs between the SQLite log and the database")
                return result
            if mine.redacted and not theirs.redacted:
                to_redact.append(mine.seq)
        for batch in _batches(src.read_raw(have)):
            dst.copy_in(batch)
            result.copied += len(batch)
            if progress:
                progress(len(batch))
        if to_redact:
            result.redacted = dst.redact(to_redact)
        if result.copied or (result.events and dst.head_anchor() is None):
            dst.anchor_head()
    except LogIntegrityError as exc:
        result.problems.append(str(exc))
        return result
    finally:
        src.close()
        dst.close()
    result.report = verify_user(data_dir, owner, target.keys, None, logs=target)
    return result


def migrate(data_dir: str | Path, target, progress: Callable[[int], None] | None = None) -> list[MigratedLog]:
    """Copy every log under `data_dir` into `target` (a `PostgresLogDirectory` with the same keys),
    then verify each there. One result per log; a log that fails does not stop the others."""
    data_dir = Path(data_dir)
    source = SqliteLogDirectory(data_dir, target.keys)
    results = []
    for _, owner in source.list_logs():
        try:
            results.append(_migrate_one(data_dir, source, target, owner, progress))
        except MemoryServiceError as exc:
            results.append(MigratedLog(owner, problems=[str(exc)]))
    return results


def problems_of(result: MigratedLog) -> list[Problem]:
    return [Problem(None, p) for p in result.problems] + (result.report.problems if result.report else [])
