"""memory.server.kvstore.PostgresStore on the suite's real PostgreSQL: a Litestar `Store` that acts
as Litestar's own in-memory one does (the same checks run on both), and `hit`, whose count stays
exact when two processes' stores count one key at the same moment."""

import time
from collections.abc import Iterator

import anyio
import pytest
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore

from memory.pgpool import open_pool
from memory.server.kvstore import PostgresStore

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture()
def pool(postgres_url: str) -> Iterator[object]:
    opened = open_pool(postgres_url)
    yield opened
    opened.close()


@pytest.fixture(params=["memory", "postgres"])
def store(request) -> Store:
    return MemoryStore() if request.param == "memory" else PostgresStore(request.getfixturevalue("pool"), "test")


async def test_an_entry_is_read_back_until_deleted_or_expired_and_renewed_on_read(store: Store):
    await store.set("kept", "value")
    await store.set("short", b"bytes", expires_in=1)
    await store.set("renewed", b"r", expires_in=2)

    assert await store.get("kept") == b"value" and await store.exists("kept")
    # No expiry: None, as Store documents it (Litestar's MemoryStore answers -1).
    assert await store.expires_in("kept") in (None, -1) and 0 <= await store.expires_in("short") <= 1
    assert await store.get("renewed", renew_for=60) == b"r" and await store.expires_in("renewed") >= 58
    await anyio.sleep(1.1)
    assert await store.get("short") is None and not await store.exists("short")
    assert await store.get("missing") is None and await store.expires_in("missing") is None

    await store.set("kept", "replaced")
    assert await store.get("kept") == b"replaced"
    await store.delete("kept")
    assert await store.get("kept") is None
    await store.delete_all()
    assert await store.get("renewed") is None


async def test_namespaces_do_not_see_each_other(pool):
    first, second = PostgresStore(pool, "one"), PostgresStore(pool, "two")
    await first.set("key", "of one")
    await first.hit("caller", 60)

    assert await second.get("key") is None and await second.hit("caller", 60) == (1, int(time.time()) + 60)
    await second.delete_all()
    assert await first.get("key") == b"of one"


async def test_hits_from_two_stores_at_once_are_each_counted_once_and_a_window_starts_again_when_over(postgres_url):
    pools = [open_pool(postgres_url), open_pool(postgres_url)]  # two replicas' connections
    try:
        stores = [PostgresStore(p, "calls") for p in pools]
        counts: list[int] = []
        resets: set[int] = set()

        async def hit(i: int) -> None:
            count, reset = await stores[i % 2].hit("alice", 60)
            counts.append(count)
            resets.add(reset)

        async with anyio.create_task_group() as tasks:
            for i in range(40):
                tasks.start_soon(hit, i)

        assert sorted(counts) == list(range(1, 41)) and len(resets) == 1
        assert (await stores[0].hit("alice", 60))[0] == 41
        assert await stores[1].hit("alice", 1) == (42, resets.pop())  # the window's end stays where it was
        short = await stores[0].hit("carol", 1)
        await anyio.sleep(1.1)
        assert short[0] == 1 and (await stores[1].hit("carol", 1))[0] == 1
    finally:
        for p in pools:
            p.close()


async def test_windows_and_entries_that_are_over_are_swept_as_hits_go_on(pool, monkeypatch):
    import memory.server.kvstore as kvstore

    monkeypatch.setattr(kvstore, "_SWEEP_EVERY", 3)
    store = PostgresStore(pool, "sweep")
    await store.set("gone", "x", expires_in=1)
    await store.set("kept", "x")
    await store.hit("old", 1)
    await anyio.sleep(1.1)

    await store.hit("new", 60)
    await store.hit("new", 60)  # the third hit of this process sweeps

    with pool.connection() as conn:
        keys = {k for (k,) in conn.execute("SELECT key FROM kv_store WHERE namespace = 'sweep' "
                                           "UNION ALL SELECT key FROM rate_limit_windows WHERE namespace = 'sweep'")}
    assert keys == {"kept", "new"}
