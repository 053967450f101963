"""What sharing costs and saves: the stores replicas share, SQLite vs PostgreSQL, in process.

    .venv/bin/python bench/shared_stores.py [--database-url postgresql://...] [--samples 500] [--memories 500]

Without a URL a throwaway PostgreSQL is started as the tests start theirs (tests/postgres_server.py).
Per call: the personal-token check every request with a `memory token` makes, redeeming a code,
and counting a request against a rate limit. Then a cold replica: a person with N memories opened
with no projections, embedding every text (SQLite: its cache went with the projections file) vs.
reading the vectors another replica left in PostgreSQL.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from litestar.stores.memory import MemoryStore

from memory.commands import StoreMemory
from memory.identity import Identity
from memory.pgpool import open_pool
from memory.server.kvstore import PostgresStore
from memory.server.oauth.pgstore import PostgresOAuthStore
from memory.server.oauth.store import Grant, OAuthStore
from memory.service import Caller, MemoryService
from projections.embedder import default_embedder
from projections.pg_embedding_cache import postgres_embedding_caches

_ALICE = Caller(Identity("local", "alice"), "bench", "r")
_WORDS = ("garden project deadline coffee budget meeting python release design review travel "
          "doctor family music invoice server backup launch marketing hiring roadmap").split()


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"p50 {statistics.median(ordered) * 1000:.3f} ms, p95 {ordered[int(len(ordered) * 0.95)] * 1000:.3f} ms"


def _timed(samples: int, call: Callable[[int], object]) -> list[float]:
    times = []
    for i in range(samples):
        began = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - began)
    return times


def per_call(url: str, samples: int, tmp: Path) -> None:
    sqlite, pg = OAuthStore(tmp / "oauth"), PostgresOAuthStore(open_pool(url), owns_pool=True)
    grant = Grant(family="f", client_id="c", user="alice", scopes=["memories:read"], resource="r")
    for name, store in (("SQLite", sqlite), ("PostgreSQL", pg)):
        store.register_personal_token("tok", user="alice", name="cli", scopes=[], created_at=time.time(),
                                      expires_at=time.time() + 3600)
        check = _timed(samples, lambda _: store.personal_token_name("tok", "alice"))
        for i in range(samples):
            store.save_code(f"{name}-{i}", grant, 60)
        redeem = _timed(samples, lambda i: store.use_code(f"{name}-{i}"))
        print(f"{name:10} personal-token check {_ms(check)}; code redemption {_ms(redeem)}")
        store.close()

    async def hits(store) -> list[float]:
        times = []
        for i in range(samples):
            began = time.perf_counter()
            if isinstance(store, PostgresStore):
                await store.hit(f"k{i % 10}", 60)
            else:  # what Litestar's limiter does with its in-memory store: read, then write back
                await store.get(f"k{i % 10}")
                await store.set(f"k{i % 10}", b"x" * 64, expires_in=60)
            times.append(time.perf_counter() - began)
        return times

    pool = open_pool(url)
    print(f"rate limit: in memory {_ms(anyio.run(hits, MemoryStore()))}; "
          f"PostgreSQL hit {_ms(anyio.run(hits, PostgresStore(pool, 'bench')))}")
    pool.close()


def cold_replica(url: str, memories: int, tmp: Path) -> None:
    embedder = default_embedder()
    assert embedder.wait_ready(120), embedder.load_error
    pool = open_pool(url)
    seeded = tmp / "seeded"
    service = MemoryService(seeded, embedder, embedding_caches=postgres_embedding_caches(pool))
    for i in range(memories):
        words = " ".join(_WORDS[(i * 7 + j) % len(_WORDS)] for j in range(8))
        service.store(_ALICE, StoreMemory(text=f"Note {i}: {words}", allow_duplicate=True))
    service.close()
    for name, caches in (("SQLite, embeds every text", None), ("PostgreSQL cache", postgres_embedding_caches(pool))):
        copy = tmp / name.split(",")[0]
        shutil.copytree(seeded, copy)
        for path in copy.glob("users/*/projections.sqlite*"):
            path.unlink()
        replica = MemoryService(copy, embedder, embedding_caches=caches)
        began = time.perf_counter()
        store = replica.users.get(_ALICE.identity)
        took = time.perf_counter() - began
        assert len(store.view.embeddings.index) == memories
        print(f"cold replica, {memories} memories, {name}: {took:.2f} s")
        replica.close()
    pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--memories", type=int, default=500)
    args = parser.parse_args()
    server = None
    url = args.database_url
    if url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from postgres_server import PostgresServer

        server = PostgresServer().start()
        url = server.database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            per_call(url, args.samples, Path(tmp))
            cold_replica(url, args.memories, Path(tmp))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
