"""Child process of test_crash.py: writes to alice's memory through MemoryService until killed.

Usage: python _crash_writer.py DATA_DIR SEED [DATABASE_URL]: the log on SQLite in DATA_DIR, or in
PostgreSQL when a URL is given (projections stay in DATA_DIR). Prints `ready`, then `ack SEQ EVENT_ID` after every
operation the service has acknowledged (appended, fsynced, projected), flushing each line.
"""

import random
import sys

from memory.commands import StoreMemory, UpdateMemory
from memory.identity import LOCAL_ISSUER, Identity
from memory.logs import open_log_directory
from memory.model import LinkType
from memory.service import Caller, MemoryService
from memory.signing import KeyRing
from projections.embedder import default_embedder


def main() -> None:
    data_dir, seed = sys.argv[1], int(sys.argv[2])
    database_url = sys.argv[3] if len(sys.argv) > 3 else None
    rng = random.Random(seed)
    logs = open_log_directory(data_dir, KeyRing(data_dir), database_url)
    service = MemoryService(data_dir, default_embedder(), logs=logs)
    caller = Caller(Identity(LOCAL_ISSUER, "alice"), client_id="crash-writer")
    log = service.users.get(caller.identity).log
    live: list[str] = []
    print("ready", flush=True)
    for i in range(1_000_000):
        roll = rng.random()
        if len(live) >= 2 and roll < 0.15:
            service.update(caller, rng.choice(live), UpdateMemory(text=f"revised note {seed}-{i}", priority=i % 11))
        elif len(live) >= 2 and roll < 0.22:
            service.delete(caller, live.pop(rng.randrange(len(live))))
        elif len(live) >= 2 and roll < 0.3:
            source, target = rng.sample(live, 2)
            service.link(caller, source, target, LinkType.SUPPORTS)
        else:
            memory = service.store(caller, StoreMemory(
                text=f"crash note {seed}-{i}: the {rng.choice(['red', 'green', 'blue'])} deploy step",
                entity=rng.choice([None, "infra.deploy", "infra.db"]), tags=[f"round-{seed}"]))
            live.append(memory.id)
        event = log.get_event(log.last_seq())  # the only writer: the last event is ours
        print(f"ack {event.seq} {event.event_id}", flush=True)


if __name__ == "__main__":
    main()
