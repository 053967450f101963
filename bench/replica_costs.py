"""What replicas' coordination costs on PostgreSQL, in round trips and milliseconds (in process).

    .venv/bin/python bench/replica_costs.py --database-url postgresql://.../EMPTY_DB [--samples 2000]
                                            [--writers 8 --appends 250]

Timed call by call in turn, so a busy shared machine slows all alike:

- round trip: `SELECT 1` on a pooled connection, the unit;
- commit / commit + NOTIFY: a pipelined transaction (BEGIN, one statement, COMMIT) without and
  with the append's `pg_notify`: what the notice adds to an append (its share of COMMIT);
- append: one event appended to a person's log (`PostgresEventLog.append_events`, NOTIFY included);
- hold: a person's lock taken and given back (`UserLock` over the advisory lock, the head read
  with the grant), as every call that appends pays it once.

Then throughput: `--writers` threads, each appending to a person of its own, twice with the
append's NOTIFY and twice with it replaced by a plain SELECT of the same payload, in turn. A
NOTIFY takes a database-wide lock from its transaction's pre-commit to its end, so notifying
commits happen one at a time: this shows whether that is what bounds appends here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_latency import percentiles  # noqa: E402

from memory.events import MemoryStored  # noqa: E402
from memory.identity import LOCAL_ISSUER, Actor, Identity  # noqa: E402
from memory.ids import new_uuid7  # noqa: E402
from memory.log import EventDraft  # noqa: E402
from memory.model import MemoryType, Scope  # noqa: E402
import memory.postgres_log  # noqa: E402
from memory.postgres_log import PostgresLogDirectory  # noqa: E402
from memory.postgres_watch import NOTIFY_SQL, notice  # noqa: E402
from memory.signing import KeyRing  # noqa: E402
from memory.userlock import UserLock  # noqa: E402

OWNER = Identity(LOCAL_ISSUER, "bench")


def _draft(i: int) -> EventDraft:
    memory_id = new_uuid7()
    return EventDraft(event_id=memory_id, actor=Actor("bench", "bench"), payload=MemoryStored(
        memory_id=memory_id, text=f"bench memory {i}", memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, metavar="URL", help="an empty PostgreSQL database")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--appends", type=int, default=250, help="per writer and run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replica-costs-") as tmp:
        logs = PostgresLogDirectory(args.database_url, KeyRing(Path(tmp)))
        try:
            log = logs.open(OWNER)
            lock = UserLock(logs.writer_lock(OWNER))
            lock.on_acquire = lambda head: None  # the hold alone, not the follow it triggers
            pool = logs._pool  # noqa: SLF001 - the log's own pool, as an append uses it

            def round_trip() -> None:
                with pool.connection() as conn:
                    conn.execute("SELECT 1").fetchone()

            def commit(notify: bool) -> None:
                with pool.connection() as conn, conn.pipeline(), conn.transaction():
                    conn.execute("SELECT 1")
                    if notify:
                        conn.execute(NOTIFY_SQL, (notice("bench", 0, "bench"),))

            counter = iter(range(10**9))
            steps = {
                "round trip": round_trip,
                "commit": lambda: commit(False),
                "commit + NOTIFY": lambda: commit(True),
                "append": lambda: log.append_events([_draft(next(counter))]),
                "hold": lambda: (lock.acquire(), lock.release()),
            }
            timings: dict[str, list[float]] = {name: [] for name in steps}
            for _ in range(args.samples):
                for name, step in steps.items():
                    began = time.perf_counter()
                    step()
                    timings[name].append((time.perf_counter() - began) * 1000)
            throughput = {(run, notify): appends_per_second(logs, args.writers, args.appends, notify, f"{run}{notify}")
                          for run in range(2) for notify in (True, False)}
        finally:
            logs.close()
    unit = percentiles(timings["round trip"])[0]
    print(f"{args.samples} samples of each, in turn; in process, PostgreSQL on this host.")
    print()
    print("| step | p50 | p95 | p50 in round trips |")
    print("|---|---:|---:|---:|")
    for name, samples in timings.items():
        p50, p95, _ = percentiles(samples)
        print(f"| {name} | {p50:.3f} ms | {p95:.3f} ms | {p50 / unit:.1f} |")
    print()
    print(f"{args.writers} writers x {args.appends} appends, each writer its own person:")
    for notify in (True, False):
        runs = ", ".join(f"{throughput[(run, notify)]:,.0f}" for run in range(2))
        print(f"- {'with NOTIFY' if notify else 'NOTIFY replaced by SELECT'}: {runs} appends/s")


def appends_per_second(logs: PostgresLogDirectory, writers: int, appends: int, notify: bool, tag: str) -> float:
    sql = memory.postgres_log.NOTIFY_SQL
    if not notify:
        memory.postgres_log.NOTIFY_SQL = "SELECT %s::text"  # the same statement's round trip, no notice
    try:
        opened = [logs.open(Identity(LOCAL_ISSUER, f"writer-{tag}-{n}")) for n in range(writers)]

        def write(log) -> None:
            for i in range(appends):
                log.append_events([_draft(i)])

        threads = [threading.Thread(target=write, args=(log,)) for log in opened]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return writers * appends / (time.perf_counter() - began)
    finally:
        memory.postgres_log.NOTIFY_SQL = sql


if __name__ == "__main__":
    main()
